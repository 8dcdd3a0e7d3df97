# security.py
# The guide's Authentication pattern. `is_valid_token` is left to the reader by the guide;
# here a token is valid when it is one of the comma-separated API_TOKENS.
import os
import secrets

from fastapi import Depends, HTTPException, Security
from fastapi.security import HTTPBearer, HTTPAuthorizationCredentials

API_TOKENS = [t for t in os.getenv("API_TOKENS", "dev-token").split(",") if t]


def is_valid_token(token: str) -> bool:
    return any(secrets.compare_digest(token, known) for known in API_TOKENS)


security = HTTPBearer()

async def verify_token(credentials: HTTPAuthorizationCredentials = Security(security)):
    token = credentials.credentials
    # Verify token (JWT, API key, etc.)
    if not is_valid_token(token):
        raise HTTPException(status_code=401, detail="Invalid token")
    return token
