"""The ready-made curl walk-through ``make run`` prints (from the seeded demo data)."""

from __future__ import annotations

import json
from pathlib import Path

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_PY_JSON = ".venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[\"{field}\"])'"


def render(base_url: str, demo_json: Path) -> str:
    info = json.loads(demo_json.read_text())
    market = info["agencies"]["market"]
    key = Path(info["demo_dir"]) / "agency-market.jwk"
    enterprise = info["enterprise"]
    body = json.dumps(
        {
            "type": "business-license",
            "subject_id": enterprise,
            "claims": {
                "name": "上海示范科技有限公司",
                "legal_representative": "张三",
                "registered_capital": "人民币1000万元",
                "address": "上海市徐汇区漕溪北路88号",
                "business_scope": "技术开发、技术咨询、技术服务",
                "established_on": "2015-06-01",
            },
        },
        ensure_ascii=False,
    )
    get = _PY_JSON.format
    return f"""
certex node at {base_url}
  API docs (Swagger UI): {base_url}/docs      OpenAPI: {base_url}/openapi.json

Walk-through (copy into another shell, in this directory):

# 1. The market-regulation bureau ({market}) signs a client assertion and gets a token
B={base_url}
A=$(.venv/bin/certex jwk assertion --client-id {market} --key {key} --token-url $B/oauth2/token)
TOKEN=$(curl -s $B/oauth2/token -d grant_type=client_credentials \\
  -d client_assertion_type={ASSERTION_TYPE} -d client_assertion=$A | {get(field="access_token")})

# 2. Issue an electronic business licence (营业执照) to enterprise {enterprise}
curl -s $B/v1/certificates -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
  -d '{body}' > /tmp/certex-issued.json
ID=$({get(field="id")} < /tmp/certex-issued.json); echo "issued $ID"
CRED=$({get(field="credential")} < /tmp/certex-issued.json)

# 3. Anyone verifies it (signature, window, disclosures, status)
curl -s $B/v1/verify -H 'Content-Type: application/json' -d "{{\\"credential\\": \\"$CRED\\"}}"; echo

# 4. Revoke it, then verify again: the status list says revoked on the very next request
curl -s $B/v1/certificates/$ID/status -H "Authorization: Bearer $TOKEN" \\
  -H 'Content-Type: application/json' -d '{{"status": "revoked", "reason": "吊销营业执照"}}' > /dev/null
curl -s $B/v1/verify -H 'Content-Type: application/json' -d "{{\\"credential\\": \\"$CRED\\"}}"; echo

# 5. Offline: fetch the issuer's keys and the status list, verify without the node
curl -s $B/.well-known/jwt-vc-issuer/issuers/{market} > /tmp/issuer.json
curl -s $B/.well-known/jwks.json > /tmp/node-jwks.json
curl -s $(echo "$CRED" | cut -d. -f2 | .venv/bin/python -c 'import base64,json,sys; s=sys.stdin.read().strip(); print(json.loads(base64.urlsafe_b64decode(s+"="*(-len(s)%4)))["status"]["status_list"]["uri"])') > /tmp/status.jwt
echo "$CRED" > /tmp/cred.txt
.venv/bin/certex verify /tmp/cred.txt --jwks /tmp/issuer.json --jwks /tmp/node-jwks.json --status-list /tmp/status.jwt
"""
