# limits.py
# The guide's Rate Limiting pattern: one slowapi Limiter, keyed by client address.
# RATE_LIMIT sets the limit of the secured enqueue endpoint (default: the guide's 10/minute).
import os

from slowapi import Limiter
from slowapi.util import get_remote_address

RATE_LIMIT = os.getenv("RATE_LIMIT", "10/minute")

limiter = Limiter(key_func=get_remote_address)
