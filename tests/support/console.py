"""A logged-in agent for console tests: accounts through the CLI, forms with their CSRF token."""
from __future__ import annotations

import re

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

    def login(self, username: str, password: str, next: str | None = None):
        """Log in through the login form (to `next`, when given)."""
        html = self.client.get("/agent/login", environ_base=self.environ).get_data(as_text=True)
        token = re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
        return self.client.post("/agent/login", query_string={"next": next} if next is not None else None,
                                data={"csrf_token": token, "username": username, "password": password},
                                environ_base=self.environ)

    def post(self, path: str, page: str, **fields: str):
        """Submit a form of `page` to `path` with the page's CSRF token."""
        html = self.client.get(page).get_data(as_text=True)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
        return self.client.post(path, data={"csrf_token": token, **fields})
