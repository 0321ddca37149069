"""GitHubEmulator: an aiohttp stand-in for api.github.com, backed by real git repositories.

It serves exactly the calls the App makes (rest.py, checks.py, gitdata.py, hooks.py, apps.py, graphql_api.py)
and github.com's page for registering an App from a manifest (apps.py), with tarballs downloaded from an
archive host of its own (codeload.github.com, another port) and release assets uploaded to an upload host of
its own (uploads.github.com, another port; releases.py, uploads.py). It checks every REST call against GitHub's
OpenAPI description and every GraphQL document against GitHub's schema when those are given, and records
every call so tests can assert on traffic as well as on resulting git history. Tests can inject faults (rate
limits, server errors; injection.py, faults.py), and every REST and GraphQL answer carries GitHub's
rate-limit headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from .apps import CODE_TTL_S, ManifestCode, RegisteredApp, add_code, authenticate_app, register_from_manifest
from .auth import Installation, InstallationToken, TokenStore
from .faults import Faults, RateLimits
from .gitstore import ZERO_OID, GitRepo, Identity
from .graphql_schema import load_schema
from .hooks import delivery_json
from .injection import FaultInjection
from .openapi import load_spec
from .releases import release_json
from .server import RecordedCall, make_app, make_codeload_app, make_uploads_app
from .state import GITHUB_COMMITTER, ROLES, PullState, RepoState, next_id, now_iso, user_json
from .uploads import new_asset

__all__ = ["EXTERNAL", "GITHUB_COMMITTER", "GitHubEmulator", "RecordedCall"]

EXTERNAL = Identity("Octo Pusher", "octo-pusher@example.com")


class GitHubEmulator(FaultInjection):
    """The emulated GitHub; set repositories up, start it, point the App at `base_url`.

    Faults and rate limits are injected with the methods of FaultInjection (injection.py).
    """

    def __init__(self, *, app_id: str, app_public_key_pem: bytes, root: Path,
                 openapi_path: Path | None = None, graphql_schema_path: Path | None = None,
                 bot_login: str = "retrain[bot]") -> None:
        self.app_id = str(app_id)
        self.app_public_key_pem = app_public_key_pem
        self.root = Path(root)
        self.spec = load_spec(Path(openapi_path) if openapi_path else None)
        self.schema = load_schema(Path(graphql_schema_path) if graphql_schema_path else None)
        self.bot_login = bot_login
        self.bot_id = 41_898_282 + int(self.app_id) if self.app_id.isdigit() else 41_898_282
        self.tokens = TokenStore()
        # Every App GitHub knows, by id: this one (installed on the repositories) and any registered from a
        # manifest (add_manifest_code, or the web flow at /settings/apps/new); their JWTs all authenticate.
        self.apps: dict[str, RegisteredApp] = {self.app_id: RegisteredApp(self.app_id, app_public_key_pem, {})}
        self.manifest_codes: dict[str, ManifestCode] = {}  # GitHub's one-time codes of the manifest flow
        self.web_user = "octo"  # who is signed in to the emulated github.com (registers Apps there)
        # Logins of the users GitHub knows, lowercased (logins are case-insensitive): repository owners, anyone
        # given a role, the senders and authors of events that happened, and those added with add_user.
        self.users: set[str] = {self.web_user, bot_login.lower()}
        self.installations: dict[int, Installation] = {}
        self.repos: dict[str, RepoState] = {}
        self.codeload: dict[str, tuple[str, str, float]] = {}
        # GitHub cuts a recursive tree listing at 100,000 entries or 7 MB (`truncated: true`); lower these to
        # test a client's fallback to listing sub-trees one at a time.
        self.tree_limit_entries = 100_000
        self.tree_limit_bytes = 7 * 1024 * 1024
        self.calls: list[RecordedCall] = []
        self.violations: list[str] = []
        # Strict about the API version: a REST call without X-GitHub-Api-Version is a violation (GitHub would
        # serve its default version; the App pins the one it was written against). An unsupported version
        # is answered 400 either way.
        self.require_api_version = False
        self.faults = Faults()
        self.rate_limits = RateLimits()
        self.hook_deliveries: list[dict[str, Any]] = []  # the App's webhook deliveries (add_hook_delivery)
        self.redelivery_status_code: int | None = None  # when set, a redelivery adds a delivery with this status
        self._redeliveries: list[int] = []
        self.base_url = ""
        self.codeload_url = ""  # the archive host's base URL (codeload.github.com), another port
        self.uploads_url = ""  # the release-asset upload host's base URL (uploads.github.com), another port
        # GitHub: "each file included in a release must be under 2 GiB", at most 1,000 assets a release;
        # lower these to test a client's refusals (uploads.py).
        self.max_asset_bytes = 2 * 1024**3 - 1
        self.max_release_assets = 1000
        self._runners: list[web.AppRunner] = []

    # --- setting up state ------------------------------------------------------------------------------
    def add_repository(self, full_name: str, files: dict[str, bytes], *, default_branch: str = "main",
                       installation_id: int = 1, private: bool = True) -> Path:
        """Create a bare repository with one initial commit holding `files`; return its git dir.

        Private by default; on a public one every user GitHub knows has at least read permission.
        """
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name or full_name in self.repos:
            raise ValueError(f"bad or duplicate repository name {full_name!r}")
        git_dir = self.root / "repos" / owner / f"{name}.git"
        git = GitRepo.init(git_dir, default_branch)
        git.commit(default_branch, dict(files), "Initial commit", author=EXTERNAL, committer=EXTERNAL,
                   expected_head=None)
        self.repos[full_name] = RepoState(full_name, git, installation_id, default_branch, private=private)
        self.add_user(owner)
        inst = self.installations.setdefault(installation_id, Installation(installation_id, owner))
        inst.repositories.add(full_name)
        return git_dir

    def add_user(self, login: str) -> None:
        """A user GitHub knows (the permission API answers 404 for a login that names no one)."""
        self.users.add(login.lower())

    def knows_user(self, login: str) -> bool:
        return login.lower() in self.users

    def set_permission(self, full_name: str, login: str, role: str) -> None:
        """Give `login` (now a known user) a role on the repository; known users never given one have none
        (read on a public repository)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        self.add_user(login)
        self.repos[full_name].roles[login] = role

    def set_installation_permissions(self, installation_id: int, permissions: dict[str, str]) -> None:
        """Replace what an installation was granted (tokens minted later are limited by it)."""
        self.installations[installation_id].permissions = dict(permissions)

    def open_issue(self, full_name: str, number: int | None = None, *, pull_request: bool = False) -> int:
        """An issue (or pull request: they share one sequence of numbers) that exists; returns its number.

        GitHub answers 404 to a comment on an issue that does not exist, so a test whose App comments on
        issue N opens it first (or lets `event_happened` do it). Without `number`, the next free one;
        an existing number is left as it is.
        """
        issues = self.repos[full_name].issues
        number = number if number is not None else max(issues, default=0) + 1
        if number < 1:
            raise ValueError("issue numbers start at 1")
        issues.setdefault(number, "pull_request" if pull_request else "issue")
        return number

    def add_comment(self, full_name: str, issue_number: int, *, comment_id: int | None = None) -> int:
        """A comment someone made on issue `issue_number` (opened if need be); returns its id.

        Reactions need a comment that exists (GitHub answers 404 otherwise). Comment ids are unique across
        GitHub, so an id already used on another issue is refused.
        """
        repo = self.repos[full_name]
        self.open_issue(full_name, issue_number)
        cid = comment_id if comment_id is not None else next_id()
        if repo.comment_issues.setdefault(cid, issue_number) != issue_number:
            raise ValueError(f"comment {cid} already exists on issue {repo.comment_issues[cid]} of {full_name}")
        return cid

    def event_happened(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Make what a webhook event reports true here; returns the payload.

        On GitHub an `issue_comment` delivery exists because the comment was made: its issue (or pull
        request) and the comment exist, and the App can answer on the issue and react to the comment.
        `issues` and `pull_request` events open their issue or pull request. A deleted comment no longer
        exists. The sender and the authors named are users GitHub knows. Other events change nothing else.
        """
        full_name = payload["repository"]["full_name"]
        for person in (payload.get("sender"), *(payload.get(k, {}).get("user") for k in ("comment", "issue"))):
            if isinstance(person, dict) and isinstance(person.get("login"), str):
                self.add_user(person["login"])
        if event == "issue_comment":
            issue = payload["issue"]
            self.open_issue(full_name, int(issue["number"]), pull_request=bool(issue.get("pull_request")))
            cid = int(payload["comment"]["id"])
            if payload.get("action") == "deleted":
                self.repos[full_name].comment_issues.pop(cid, None)
            else:
                self.add_comment(full_name, int(issue["number"]), comment_id=cid)
        elif event in ("issues", "pull_request"):
            item = payload["issue" if event == "issues" else "pull_request"]
            self.open_issue(full_name, int(item["number"]), pull_request=event == "pull_request")
        return payload

    def add_manifest_code(self, manifest: dict[str, Any], *, owner: str | None = None, org: str | None = None,
                          name: str | None = None, ttl_s: float = CODE_TTL_S) -> str:
        """Register an App from `manifest` as if a person confirmed it on GitHub's page (as `owner`, default
        `web_user`, or for organization `org`); returns the one-time code GitHub would redirect with.
        A manifest GitHub's page refuses raises ValueError."""
        app = register_from_manifest(self, manifest, owner=org or owner or self.web_user,
                                     owner_type="Organization" if org else "User", name=name)
        return add_code(self, app, ttl_s)

    def authenticate_app(self, token: str) -> RegisteredApp:
        """The App an App JWT authenticates (AuthError with GitHub's wording otherwise)."""
        return authenticate_app(self, token)

    def expire_tokens(self) -> None:
        """Expire every installation token minted so far (to test the App's token refresh)."""
        self.tokens.expire_all()

    def commit_files(self, full_name: str, files: dict[str, bytes | None], *, message: str = "external change",
                     branch: str | None = None) -> str:
        """A commit pushed by someone else (None deletes a path); returns the new head.

        A branch that does not exist yet is created from the default branch's head.
        """
        repo = self.repos[full_name]
        branch = branch or repo.default_branch
        return repo.git.commit(branch, files, message, author=EXTERNAL, committer=EXTERNAL,
                               expected_head=repo.git.branch_head(branch),
                               base=repo.git.branch_head(repo.default_branch))

    def create_branch(self, full_name: str, branch: str, *, at: str | None = None) -> str:
        """A branch someone made (as `git push origin <oid>:refs/heads/<branch>` would), at the commit `at`
        (default: the default branch's head); returns that commit."""
        repo = self.repos[full_name]
        oid = repo.git.resolve(at or repo.default_branch)
        if oid is None or not repo.git.update_ref(f"refs/heads/{branch}", oid, ZERO_OID):
            raise ValueError(f"cannot create {branch} at {at} in {full_name}")
        return oid

    def open_pull(self, full_name: str, head: str, *, base: str | None = None, author: str = "alice",
                  title: str = "More text") -> int:
        """A pull request from the branch `head` of this repository into `base` (default branch); its number.
        Its head follows the branch, as GitHub's does when someone pushes to it."""
        repo = self.repos[full_name]
        if repo.git.branch_head(head) is None:
            raise ValueError(f"{full_name} has no branch {head}")
        return self._add_pull(repo, PullState(0, title, author, head, base or repo.default_branch))

    def open_fork_pull(self, full_name: str, fork_owner: str, files: dict[str, bytes | None], *,
                       head: str = "main", base: str | None = None, title: str = "More text") -> int:
        """A pull request from `fork_owner`'s fork, whose head commit changes `files` on top of the base
        branch's head; its number. The fork's commits land in the base repository as refs/pull/N/head."""
        repo = self.repos[full_name]
        self.add_user(fork_owner)
        number = self._add_pull(repo, PullState(0, title, fork_owner, head, base or repo.default_branch,
                                                fork_owner=fork_owner))
        self.push_to_fork_pull(full_name, number, files)
        return number

    def push_to_fork_pull(self, full_name: str, number: int, files: dict[str, bytes | None]) -> str:
        """The fork's author pushes a commit changing `files` to the pull request's head; the new head."""
        repo = self.repos[full_name]
        pull = repo.pulls[number]
        parent = repo.git.resolve(pull.pull_ref) or repo.git.branch_head(pull.base_ref)
        scratch = f"emulator-fork-{number}-{next_id()}"  # written as a branch, then moved out of refs/heads
        oid = repo.git.commit(scratch, files, "fork change", author=EXTERNAL, committer=EXTERNAL,
                              expected_head=None, base=parent)
        repo.git.git("update-ref", pull.pull_ref, oid)
        repo.git.git("update-ref", "-d", f"refs/heads/{scratch}")
        return oid

    def _add_pull(self, repo: RepoState, pull: PullState) -> int:
        number = self.open_issue(repo.full_name, pull_request=True)
        pull.number, pull.created_at = number, now_iso()
        repo.pulls[number] = pull
        self.add_user(pull.author)
        return number

    def merge_pull(self, full_name: str, number: int) -> str:
        """Merge a same-repository pull request (a merge commit on the base branch); the new base head."""
        repo = self.repos[full_name]
        pull = repo.pulls[number]
        head = repo.git.resolve(pull.pull_ref if pull.fork_owner else f"refs/heads/{pull.head_ref}")
        base = repo.git.branch_head(pull.base_ref)
        assert head and base
        tree = repo.git.git("merge-tree", "--write-tree", base, head).stdout.decode().split()[0]
        oid = repo.git.commit_tree(tree, [base, head], f"Merge pull request #{number}", author=EXTERNAL,
                                   committer=EXTERNAL)
        if not repo.git.update_ref(f"refs/heads/{pull.base_ref}", oid, base):
            raise RuntimeError("the base branch moved during the merge")
        pull.state, pull.merged = "closed", True
        return oid

    # --- inspecting state ------------------------------------------------------------------------------
    def head(self, full_name: str, branch: str | None = None) -> str:
        repo = self.repos[full_name]
        oid = repo.git.branch_head(branch or repo.default_branch)
        if oid is None:
            raise KeyError(f"{full_name} has no branch {branch}")
        return oid

    def read_file(self, full_name: str, path: str, ref: str | None = None) -> bytes | None:
        repo = self.repos[full_name]
        commit = repo.git.resolve(ref or repo.default_branch)
        return repo.git.read_file(commit, path) if commit else None

    def git_log(self, full_name: str, branch: str | None = None) -> list[dict[str, Any]]:
        """Newest first: {oid, message, author_name, committed_date, parents}."""
        repo = self.repos[full_name]
        return repo.git.log(branch or repo.default_branch)

    def comments(self, full_name: str, issue_number: int) -> list[dict[str, Any]]:
        return list(self.repos[full_name].comments.get(issue_number, []))

    def reactions(self, full_name: str, comment_id: int) -> list[str]:
        return [r["content"] for r in self.repos[full_name].reactions.get(comment_id, [])]

    def check_runs(self, full_name: str) -> list[dict[str, Any]]:
        """The current state of every check run on the repository, in creation order."""
        return copy.deepcopy(list(self.repos[full_name].check_runs.values()))

    def check_run_history(self, full_name: str, check_run_id: int) -> list[Any]:
        """Every create/update body the emulator accepted for one check run, in order."""
        return copy.deepcopy(self.repos[full_name].check_history.get(check_run_id, []))

    def set_immutable_releases(self, full_name: str, enabled: bool = True) -> None:
        """The repository's "immutable releases" setting: a published release's assets can no longer change."""
        self.repos[full_name].immutable_releases = enabled

    def releases(self, full_name: str) -> list[dict[str, Any]]:
        """Every release of the repository (drafts included) as the API shows it, with assets, oldest first."""
        repo = self.repos[full_name]
        return [release_json(self, repo, r) for r in repo.releases.values()]

    def add_release_asset(self, full_name: str, release_id: int, name: str, data: bytes, *,
                          state: str = "uploaded", content_type: str = "application/octet-stream") -> int:
        """An asset on a release as an upload left it (returns its id): state "open" with `data` the bytes that
        arrived is one cut short, which GitHub keeps (under its name) until it is deleted."""
        repo = self.repos[full_name]
        asset = new_asset(self, repo, repo.releases[release_id], name, size=len(data), content_type=content_type)
        path = self.asset_path(asset["id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if state == "uploaded":
            asset.update(state="uploaded", digest=f"sha256:{hashlib.sha256(data).hexdigest()}")
        else:
            asset["state"] = state
        return int(asset["id"])

    def asset_path(self, asset_id: int) -> Path:
        """Where the emulator keeps an uploaded asset's bytes."""
        return self.root / "release-assets" / str(asset_id)

    def asset_bytes(self, full_name: str, tag: str, name: str) -> bytes:
        """The bytes uploaded as asset `name` of the (one) release tagged `tag`; KeyError when there is none."""
        found = [a for r in self.releases(full_name) if r["tag_name"] == tag for a in r["assets"] if a["name"] == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} assets named {name!r} on releases tagged {tag!r} of {full_name}")
        return self.asset_path(found[0]["id"]).read_bytes()

    # --- webhook deliveries ----------------------------------------------------------------------------
    def add_hook_delivery(self, *, guid: str, event: str, action: str | None = None, status_code: int = 502,
                          redelivery: bool = False, installation_id: int | None = None,
                          repository_id: int | None = None, delivered_at: str | None = None) -> int:
        """Record a delivery of the App's webhook (as GitHub's delivery log would hold it); returns its id."""
        delivery = delivery_json(guid=guid, event=event, action=action, status_code=status_code,
                                 redelivery=redelivery, installation_id=installation_id,
                                 repository_id=repository_id, delivered_at=delivered_at)
        self.hook_deliveries.append(delivery)
        return int(delivery["id"])

    @property
    def redelivery_requests(self) -> list[int]:
        """Delivery ids the App asked GitHub to redeliver, in order."""
        return list(self._redeliveries)

    def record_redelivery(self, delivery: dict[str, Any]) -> None:
        """A redelivery attempt of `delivery` (from POST .../attempts)."""
        self._redeliveries.append(int(delivery["id"]))
        if self.redelivery_status_code is not None:
            self.add_hook_delivery(guid=delivery["guid"], event=delivery["event"], action=delivery["action"],
                                   status_code=self.redelivery_status_code, redelivery=True,
                                   installation_id=delivery["installation_id"],
                                   repository_id=delivery["repository_id"])

    # --- helpers for the handlers ----------------------------------------------------------------------
    def find_repo(self, token: InstallationToken, full_name: str) -> RepoState | None:
        """The repository if this token may see it (GitHub answers 404 otherwise, never 403)."""
        repo = self.repos.get(full_name)
        if repo is None or repo.installation_id != token.installation_id:
            return None
        allowed = token.repositories
        if allowed is None:  # an unnarrowed token follows the installation's current repositories
            allowed = frozenset(self.installations[token.installation_id].repositories)
        return repo if full_name in allowed else None

    def bot_user(self) -> dict[str, Any]:
        return user_json(self.base_url, self.bot_login, user_type="Bot", user_id=self.bot_id)

    def app_author(self) -> Identity:
        return Identity(self.bot_login, f"{self.bot_id}+{self.bot_login}@users.noreply.github.com")

    # --- HTTP ------------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        return make_app(self)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on the running loop; returns the base URL (the emulator's https://api.github.com).

        The archive host (codeload.github.com) gets a port of its own, `codeload_url`: another origin, as on
        GitHub, so that a client following a tarball redirect must drop its Authorization header. So does the
        upload host of release assets (uploads.github.com), `uploads_url`, which releases' `upload_url` names.
        """
        self.base_url = await self._serve(self.make_app(), host, port)
        self.codeload_url = await self._serve(make_codeload_app(self), host, 0)
        self.uploads_url = await self._serve(make_uploads_app(self), host, 0)
        return self.base_url

    async def _serve(self, app: web.Application, host: str, port: int) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runners.append(runner)
        bound_host, bound_port = runner.addresses[0][:2]
        bound_host = f"[{bound_host}]" if ":" in bound_host else bound_host  # IPv6 literal
        return f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        while self._runners:
            await self._runners.pop().cleanup()

    @contextlib.contextmanager
    def running_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve from a daemon thread with its own loop, for sync fixtures; yields the base URL."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="github-emulator", daemon=True)
        thread.start()
        try:
            yield asyncio.run_coroutine_threadsafe(self.start(host, port), loop).result(timeout=30)
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
