"""The ready-made curl walk-through ``make run`` prints (from the seeded demo data)."""

from __future__ import annotations

import json
from pathlib import Path

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_PY = ".venv/bin/python -c 'import json,sys; print(json.load(sys.stdin){path})'"


def _get(path: str) -> str:
    return _PY.format(path=path)


def render(base_url: str, demo_json: Path) -> str:
    info = json.loads(demo_json.read_text())
    market = info["agencies"]["market"]
    demo = Path(info["demo_dir"])
    enterprise, bank, auditor = info["enterprise"], info["bank"], info["auditor"]
    body = json.dumps(
        {
            "type": "business-license",
            "subject_id": enterprise,
            "claims": {
                "name": "上海示范科技有限公司",
                "enterprise_type": "有限责任公司",
                "legal_representative": "张三",
                "registered_capital": "人民币1000万元",
                "address": "上海市徐汇区漕溪北路88号",
                "business_scope": "技术开发、技术咨询、技术服务",
                "established_on": "2015-06-01",
            },
        },
        ensure_ascii=False,
    )
    token = (
        "curl -s $B/oauth2/token -d grant_type=client_credentials "
        f"-d client_assertion_type={ASSERTION_TYPE} -d client_assertion="
    )
    return f"""
certex node at {base_url}
  API docs (Swagger UI): {base_url}/docs      OpenAPI: {base_url}/openapi.json

Walk-through (copy into another shell, in this directory):

B={base_url}
# 1. The market-regulation bureau ({market}) signs a client assertion and gets a token
A=$(.venv/bin/certex jwk assertion --client-id {market} --key {demo}/agency-market.jwk --token-url $B/oauth2/token)
AGENCY=$({token}$A | {_get('["access_token"]')})

# 2. It issues an electronic business licence (营业执照) to enterprise {enterprise}
curl -s $B/v1/certificates -H "Authorization: Bearer $AGENCY" -H 'Content-Type: application/json' \\
  -d '{body}' > /tmp/certex-issued.json
ID=$({_get('["id"]')} < /tmp/certex-issued.json); echo "issued $ID"
CRED=$({_get('["credential"]')} < /tmp/certex-issued.json)

# 3. Anyone verifies it (signature, window, disclosures, status)
curl -s $B/v1/verify -H 'Content-Type: application/json' -d "{{\\"credential\\": \\"$CRED\\"}}"; echo

# 4. The enterprise logs in (dev IdP) and consents: its bank may pull the licence once,
#    for 企业银行开户 (item {info["bank_item"]}), only the claims that item needs
ENT=$(CERTEX_DEV=1 CERTEX_BASE_URL=$B .venv/bin/certex dev-token --subject {enterprise})
UNTIL=$(date -u -d '+30 days' +%Y-%m-%dT%H:%M:%SZ)
curl -s $B/v1/consents -H "Authorization: Bearer $ENT" -H 'Content-Type: application/json' \\
  -d "{{\\"grantee\\": \\"{bank}\\", \\"item_code\\": \\"{info["bank_item"]}\\", \\"valid_until\\": \\"$UNTIL\\", \\"max_uses\\": 1}}" > /tmp/certex-consent.json
CONSENT=$({_get('["id"]')} < /tmp/certex-consent.json); echo "consent $CONSENT"

# 5. The bank pulls: the node checks the consent, logs the access, then releases the
#    licence with only the permitted disclosures, and a receipt for the ledger entry
A=$(.venv/bin/certex jwk assertion --client-id {bank} --key {demo}/{bank}.jwk --token-url $B/oauth2/token)
BANK=$({token}$A | {_get('["access_token"]')})
curl -s $B/v1/pull -H "Authorization: Bearer $BANK" -H 'Content-Type: application/json' \\
  -d "{{\\"subject_id\\": \\"{enterprise}\\", \\"item_code\\": \\"{info["bank_item"]}\\", \\"consent_id\\": \\"$CONSENT\\"}}" > /tmp/certex-pull.json
{_get('["receipt"]')} < /tmp/certex-pull.json > /tmp/certex-receipt.txt; cat /tmp/certex-receipt.txt
PRES=$({_get('["credentials"][0]["credential"]')} < /tmp/certex-pull.json)

# 6. The bank verifies the presentation: enterprise_type was not disclosed
curl -s $B/v1/verify -H 'Content-Type: application/json' -d "{{\\"credential\\": \\"$PRES\\"}}"; echo
# ... and a second pull is refused (max_uses 1), with the ledger index of the denial
curl -s $B/v1/pull -H "Authorization: Bearer $BANK" -H 'Content-Type: application/json' \\
  -d "{{\\"subject_id\\": \\"{enterprise}\\", \\"item_code\\": \\"{info["bank_item"]}\\", \\"consent_id\\": \\"$CONSENT\\"}}"; echo

# 7. The enterprise reads who accessed its data
curl -s $B/v1/me/access-log -H "Authorization: Bearer $ENT" | .venv/bin/python -m json.tool --no-ensure-ascii | grep -v '"leaf"\\|"receipt"'

# 8. An auditor checks the receipt against the node's ledger key, offline
IDX=$({_get('["ledger_index"]')} < /tmp/certex-pull.json)
A=$(.venv/bin/certex jwk assertion --client-id {auditor} --key {demo}/{auditor}.jwk --token-url $B/oauth2/token)
AUDIT=$({token}$A | {_get('["access_token"]')})
curl -s "$B/v1/ledger/entries?start=$IDX&end=$((IDX+1))" -H "Authorization: Bearer $AUDIT" | {_get('["entries"][0]["leaf"]')} > /tmp/certex-leaf.b64
curl -s $B/v1/ledger/vkey > /tmp/certex-vkey.txt
.venv/bin/certex receipt verify /tmp/certex-receipt.txt --vkey /tmp/certex-vkey.txt --leaf /tmp/certex-leaf.b64

# 9. The bureau revokes the licence; the very next verification says so
curl -s $B/v1/certificates/$ID/status -H "Authorization: Bearer $AGENCY" \\
  -H 'Content-Type: application/json' -d '{{"status": "revoked", "reason": "吊销营业执照"}}' > /dev/null
curl -s $B/v1/verify -H 'Content-Type: application/json' -d "{{\\"credential\\": \\"$CRED\\"}}"; echo

# 10. Offline: issuer keys, node keys and the status list from the node, then no node at all
curl -s $B/.well-known/jwt-vc-issuer/issuers/{market} > /tmp/issuer.json
curl -s $B/.well-known/jwks.json > /tmp/node-jwks.json
curl -s $B/v1/status-lists/1 > /tmp/status.jwt
echo "$CRED" > /tmp/cred.txt
.venv/bin/certex verify /tmp/cred.txt --jwks /tmp/issuer.json --jwks /tmp/node-jwks.json --status-list /tmp/status.jwt
"""
