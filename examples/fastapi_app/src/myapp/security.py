# security.py
# The guide's Authentication pattern. `is_valid_token` is left to the reader by the guide;
# here a token is valid when it is one of the comma-separated API_TOKENS. The app refuses to
# start without them: there is no default token.
import os
import secrets

from fastapi import Depends, HTTPException, Security
from fastapi.security import HTTPBearer, HTTPAuthorizationCredentials

#: The shortest token accepted: a guessable token is no better than none.
MIN_TOKEN_LENGTH = 16
API_TOKENS = [t.strip() for t in os.getenv("API_TOKENS", "").split(",") if t.strip()]
if not API_TOKENS or any(len(t) < MIN_TOKEN_LENGTH for t in API_TOKENS):
    raise RuntimeError(
        "set API_TOKENS to one or more comma-separated tokens of at least "
        f"{MIN_TOKEN_LENGTH} characters each, for example "
        'API_TOKENS="$(python -c \'import secrets; print(secrets.token_urlsafe(32))\')"'
    )


def is_valid_token(token: str) -> bool:
    return any(secrets.compare_digest(token, known) for known in API_TOKENS)


security = HTTPBearer()

async def verify_token(credentials: HTTPAuthorizationCredentials = Security(security)):
    token = credentials.credentials
    # Verify token (JWT, API key, etc.)
    if not is_valid_token(token):
        raise HTTPException(status_code=401, detail="Invalid token")
    return token
