"""OAuth clients (agencies, banks, auditors): registration, private_key_jwt, access tokens."""
