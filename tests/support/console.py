"""A logged-in agent for console tests: accounts through the CLI, forms with their CSRF token, the
authenticator's codes (pyotp) for two-factor sign-in."""
from __future__ import annotations

import re
import time

import pyotp

ADMIN = ("wang.admin", "admin-password-1")
AGENT = ("li.agent", "agent-password-1")


def create_agent(runner, username: str, password: str, admin: bool = False) -> None:
    """Create an account with the real CLI command."""
    args = ["agent", "create", username, "--password", password] + (["--admin"] if admin else [])
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output


class Console:
    """Drives the console like a browser without JavaScript: GET a page, POST its forms.

    address: the client address the requests come from (REMOTE_ADDR).
    """

    def __init__(self, client, address: str = "127.0.0.1"):
        self.client = client
        self.environ = {"REMOTE_ADDR": address}
        self.secret = None  # the authenticator: the secret read off the enrolment page
        self.last_step = None  # the step of the last code given (the console refuses a code twice)
        self.recovery_codes = []  # as the enrolment showed them

    def login(self, username: str, password: str, next: str | None = None):
        """Log in through the login form (to `next`, when given)."""
        html = self.client.get("/agent/login", environ_base=self.environ).get_data(as_text=True)
        token = re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
        return self.client.post("/agent/login", query_string={"next": next} if next is not None else None,
                                data={"csrf_token": token, "username": username, "password": password},
                                environ_base=self.environ)

    def post(self, path: str, page: str, **fields: str):
        """Submit a form of `page` to `path` with the page's CSRF token."""
        html = self.client.get(page, environ_base=self.environ).get_data(as_text=True)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
        return self.client.post(path, data={"csrf_token": token, **fields}, environ_base=self.environ)

    def code(self) -> str:
        """Return the authenticator's code for the earliest step the console still accepts.

        The console takes the current 30-second step and one either side, each once: under a
        frozen clock a test gets three codes, then must move the clock on.
        """
        now = int(time.time()) // 30
        step = now - 1 if self.last_step is None else max(now - 1, self.last_step + 1)
        assert step <= now + 1, "no code left in this 30-second window: move the clock on"
        self.last_step = step
        return pyotp.TOTP(self.secret).generate_otp(step)

    def enrol(self):
        """Enrol like a phone would: read the secret off the enrolment page, send its code, keep
        the recovery codes shown. Return the answer (the recovery codes page, 200)."""
        html = self.client.get("/agent/2fa/enrol", environ_base=self.environ).get_data(as_text=True)
        self.secret = re.search(r'id="secret">([A-Z2-7 ]+)<', html).group(1).replace(" ", "")
        self.last_step = None
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
        resp = self.client.post("/agent/2fa/enrol", data={"csrf_token": token, "code": self.code()},
                                environ_base=self.environ)
        self.recovery_codes = re.findall(r"<li><code>([0-9a-z-]+)</code></li>", resp.get_data(as_text=True))
        return resp

    def login_with_code(self, username: str, password: str, next: str | None = None):
        """Log in through both steps: the password, then the authenticator's code (enrolling first
        when the console asks for it). Return the last answer: 302 to the page asked for, or the
        recovery codes page (200) right after enrolling."""
        resp = self.login(username, password, next)
        location = resp.headers.get("Location", "")
        if location == "/agent/2fa/enrol":
            return self.enrol()
        if location == "/agent/2fa/code":
            html = self.client.get(location, environ_base=self.environ).get_data(as_text=True)
            token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
            return self.client.post(location, data={"csrf_token": token, "code": self.code()},
                                    environ_base=self.environ)
        return resp
