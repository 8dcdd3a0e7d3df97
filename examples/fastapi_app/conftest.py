# conftest.py
# The example's test setup beyond the guide's (tests/conftest.py is the guide's, verbatim).
# The app refuses to start without API_TOKENS, and every endpoint needs one of them; the
# guide's tests send no token, so for them the token check is overridden, as FastAPI's
# testing guide does it (`app.dependency_overrides`). Auth itself is tested by agentexec's
# own tests of this app (tests/examples in the agentexec repository).
import os

os.environ.setdefault("API_TOKENS", "guide-tests-token-0123456789")

from myapp.main import app
from myapp.security import verify_token

app.dependency_overrides[verify_token] = lambda: "guide-tests"
