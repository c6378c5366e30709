"""Governance commands: users, API tokens, projects and members, the audit trail."""

import contextlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from modelworks.cli import open_store, principal
from modelworks.cli.output import (
    JSON_OPTION_HELP,
    done,
    emit,
    err_console,
    print_json,
    print_record,
    print_table,
    warn,
)
from modelworks.core.errors import CorruptData

if TYPE_CHECKING:
    from modelworks.governance.schemas import TokenOut
    from modelworks.governance.service import GovernanceService

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password",
        help="The password (8+ characters). Prefer --password-stdin or the prompt: "
        "arguments show up in shell history.",
    ),
]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]

users_app = typer.Typer(name="users", help="Manage user accounts (site admins).")
tokens_app = typer.Typer(name="tokens", help="Create, list and revoke API tokens.")
projects_app = typer.Typer(name="projects", help="Manage projects and their members.")
members_app = typer.Typer(name="members", help="Manage who holds which role in a project.")
audit_app = typer.Typer(name="audit", help="Read and verify the tamper-evident audit trail.")
projects_app.add_typer(members_app)

for _app in (users_app, tokens_app, projects_app, members_app, audit_app):
    _app.info.no_args_is_help = True


@contextlib.contextmanager
def _governance() -> Iterator["GovernanceService"]:
    """The governance service on the local store."""
    from modelworks.governance.service import GovernanceService

    with open_store() as store:
        yield GovernanceService(store)


def _read_password(password: str | None, from_stdin: bool, *, required: bool) -> str | None:
    if password is not None and from_stdin:
        raise typer.BadParameter("Give either --password or --password-stdin, not both.")
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if password is not None:
        return password
    if sys.stdin.isatty():
        value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return value
    if required:
        raise typer.BadParameter("Give the password with --password-stdin or --password.")
    return None


# ---- users ------------------------------------------------------------------------------
_USER_COLUMNS = [
    ("username", "Username"),
    ("id", "Id"),
    ("email", "Email"),
    ("is_admin", "Site admin"),
    ("disabled", "Disabled"),
    ("created_at", "Created"),
]


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Login name: letters, digits, '.', '_', '-'.")],
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    email: Annotated[str | None, typer.Option(help="Contact address.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user a site admin.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a user account; prompts for the password when run in a terminal.

    Without a password the account can only use API tokens until one is set.

    Example:
      echo "$PASSWORD" | modelworks users create alice --email alice@example.com --password-stdin
    """
    secret = _read_password(password, password_stdin, required=False)
    with _governance() as gov:
        user = gov.create_user(principal(), username, secret, email=email, is_admin=admin)

    def render() -> None:
        done(f"Created user {user.username} ({user.id}).")
        if secret is None:
            warn("No password set: the user can sign in only with API tokens until one is set.")

    emit(user, as_json, render)


@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """List all user accounts.

    Example:
      modelworks users list --json
    """
    with _governance() as gov:
        users = gov.list_users(principal())
    emit(users, as_json, lambda: print_table([u.model_dump() for u in users], _USER_COLUMNS))


@users_app.command("disable")
def users_disable(
    username: Annotated[str, typer.Argument(help="The user to disable.")],
    as_json: JsonOpt = False,
) -> None:
    """Disable a user: they can no longer sign in, and all their API tokens are revoked.

    Example:
      modelworks users disable alice
    """
    with _governance() as gov:
        user = gov.disable_user(principal(), username)
    emit(user, as_json, lambda: done(f"Disabled {user.username} and revoked their tokens."))


@users_app.command("set-password")
def users_set_password(
    username: Annotated[str, typer.Argument(help="Whose password to set.")],
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Set a user's password; prompts for it when run in a terminal.

    Example:
      echo "$PASSWORD" | modelworks users set-password alice --password-stdin
    """
    secret = _read_password(password, password_stdin, required=True)
    assert secret is not None
    with _governance() as gov:
        gov.set_password(principal(), username, secret)
    done(f"Password of {username} changed.")


# ---- tokens -----------------------------------------------------------------------------
_TOKEN_COLUMNS = [
    ("id", "Id"),
    ("name", "Name"),
    ("prefix", "Starts with"),
    ("created_at", "Created"),
    ("expires_at", "Expires"),
    ("last_used_at", "Last used"),
    ("revoked_at", "Revoked"),
]
UserOpt = Annotated[
    str | None,
    typer.Option(
        "--user",
        "-u",
        help="Whose tokens. Needed from the local CLI: the OS user has no account.",
    ),
]


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="A label to recognise the token by.")],
    user: UserOpt = None,
    expires_in_days: Annotated[
        int,
        typer.Option(min=1, max=3650, help="Days until the token stops working."),
    ] = 90,
    never_expires: Annotated[
        bool, typer.Option("--never-expires", help="Create a token without expiry.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token; the secret is printed once and never shown again.

    Example:
      modelworks tokens create laptop --user alice --expires-in-days 30
    """
    with _governance() as gov:
        created = gov.create_token(
            principal(),
            name,
            expires_in_days=None if never_expires else expires_in_days,
            username=user,
        )
    if as_json:
        print_json(created)
    else:
        typer.echo(created.token)
        expiry = created.expires_at.isoformat() if created.expires_at else "never"
        done(f"Created token {created.name!r} ({created.id}); expires: {expiry}.")
    warn(
        "Copy the token now: it will not be shown again. "
        "Use it as 'Authorization: Bearer <token>' or MODELWORKS_TOKEN."
    )


@tokens_app.command("list")
def tokens_list(user: UserOpt = None, as_json: JsonOpt = False) -> None:
    """List a user's API tokens (never their secrets).

    Example:
      modelworks tokens list --user alice
    """
    with _governance() as gov:
        tokens = gov.list_tokens(principal(), user)
    emit(tokens, as_json, lambda: print_table([_token_row(t) for t in tokens], _TOKEN_COLUMNS))


def _token_row(token: "TokenOut") -> dict[str, object]:
    row: dict[str, object] = token.model_dump()
    row["prefix"] = f"{token.prefix}…"
    return row


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (see `tokens list`).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API token; requests that use it are refused from now on.

    Example:
      modelworks tokens revoke 01J9Z3K4T5V6W7X8Y9Z0ABCDEF
    """
    with _governance() as gov:
        token = gov.revoke_token(principal(), token_id)
    emit(token, as_json, lambda: done(f"Revoked token {token.name!r} ({token.id})."))


# ---- projects ---------------------------------------------------------------------------
_PROJECT_COLUMNS = [
    ("name", "Name"),
    ("id", "Id"),
    ("role", "Your role"),
    ("description", "Description"),
    ("created_at", "Created"),
]


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="Project name: letters, digits, '.', '_', '-'.")],
    description: Annotated[str, typer.Option(help="What the project is for.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a project.

    Example:
      modelworks projects create churn --description "Customer churn models"
    """
    with _governance() as gov:
        project = gov.create_project(principal(), name, description)
    emit(project, as_json, lambda: done(f"Created project {project.name} ({project.id})."))


@projects_app.command("list")
def projects_list(as_json: JsonOpt = False) -> None:
    """List the projects you can see.

    Example:
      modelworks projects list
    """
    with _governance() as gov:
        projects = gov.list_projects(principal())
    emit(
        projects,
        as_json,
        lambda: print_table([p.model_dump() for p in projects], _PROJECT_COLUMNS),
    )


@projects_app.command("show")
def projects_show(
    name: Annotated[str, typer.Argument(help="Project name or id.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one project.

    Example:
      modelworks projects show default
    """
    with _governance() as gov:
        project = gov.get_project(principal(), name)
    emit(project, as_json, lambda: print_record(f"Project {project.name}", project.model_dump()))


@projects_app.command("delete")
def projects_delete(
    name: Annotated[str, typer.Argument(help="Project name or id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a project (soft: its records stay in the database and the audit trail).

    Example:
      modelworks projects delete old-experiments --yes
    """
    if not yes:
        typer.confirm(f"Delete project {name!r}?", abort=True, err=True)
    with _governance() as gov:
        gov.delete_project(principal(), name)
    done(f"Deleted project {name}.")


_MEMBER_COLUMNS = [("username", "Username"), ("role", "Role"), ("user_id", "User id")]
ProjectArg = Annotated[str, typer.Argument(help="Project name or id.")]


@members_app.command("list")
def members_list(project: ProjectArg, as_json: JsonOpt = False) -> None:
    """List a project's members and their roles.

    Example:
      modelworks projects members list default
    """
    with _governance() as gov:
        members = gov.list_members(principal(), project)
    emit(members, as_json, lambda: print_table([m.model_dump() for m in members], _MEMBER_COLUMNS))


@members_app.command("set")
def members_set(
    project: ProjectArg,
    username: Annotated[str, typer.Argument(help="The user.")],
    role: Annotated[str, typer.Argument(help="viewer, editor, maintainer or admin.")],
    as_json: JsonOpt = False,
) -> None:
    """Give a user a role in a project (adds them, or changes their role).

    Roles include those below them: viewer < editor < maintainer < admin.

    Example:
      modelworks projects members set default alice editor
    """
    with _governance() as gov:
        member = gov.set_member(principal(), project, username, role)
    emit(member, as_json, lambda: done(f"{member.username} is now {member.role} in {project}."))


@members_app.command("remove")
def members_remove(
    project: ProjectArg,
    username: Annotated[str, typer.Argument(help="The user.")],
) -> None:
    """Remove a user from a project.

    Example:
      modelworks projects members remove default alice
    """
    with _governance() as gov:
        gov.remove_member(principal(), project, username)
    done(f"Removed {username} from {project}.")


# ---- audit ------------------------------------------------------------------------------
_AUDIT_COLUMNS = [
    ("seq", "#"),
    ("ts", "Time"),
    ("actor", "Actor"),
    ("action", "Action"),
    ("object_type", "Object"),
    ("object_id", "Object id"),
    ("changes", "Changes"),
]


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time; use e.g. 2024-05-01 or 2024-05-01T13:00:00Z.",
            param_hint=option,
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@audit_app.command("list")
def audit_list(
    project: Annotated[
        str | None,
        typer.Option("--project", "-p", help="Only this project's records (default: all)."),
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="Who acted, e.g. alice or local:bob (the OS user).")
    ] = None,
    object_id: Annotated[
        str | None, typer.Option("--object", help="Id of the object acted on.")
    ] = None,
    action: Annotated[
        str | None, typer.Option(help="Action, e.g. run.create; a trailing * matches a prefix.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="From this ISO time on (UTC unless a zone is given).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Before this ISO time.")] = None,
    max_results: Annotated[int, typer.Option(help="Records per page.")] = 100,
    page_token: Annotated[
        str | None, typer.Option(help="The next_page_token of the previous page.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List audit records, newest first.

    Example:
      modelworks audit list --project default --action 'experiment.*' --since 2024-05-01
    """
    since_dt = _parse_time(since, "--since")
    until_dt = _parse_time(until, "--until")
    with _governance() as gov:
        page = gov.list_audit(
            principal(),
            project=project,
            actor=actor,
            object_id=object_id,
            action=action,
            since=since_dt,
            until=until_dt,
            max_results=max_results,
            page_token=page_token,
        )

    def render() -> None:
        print_table([r.model_dump() for r in page.items], _AUDIT_COLUMNS, empty="No records.")
        if page.next_page_token:
            err_console.print(f"More records: --page-token {page.next_page_token}")

    emit(page, as_json, render)


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check the audit trail's hash chain; exits 7 when a record was changed or deleted.

    Example:
      modelworks audit verify || echo "audit trail was tampered with"
    """
    with _governance() as gov:
        result = gov.verify_audit(principal())
    if as_json:
        print_json(result)
    elif result.ok:
        done(f"Audit trail intact: {result.checked} records checked.")
    else:
        err_console.print(
            f"[red]Audit trail broken[/red] ({result.checked} records checked):", soft_wrap=True
        )
        for problem in result.problems:
            typer.echo(f"  - {problem}")
    if not result.ok:
        raise typer.Exit(CorruptData.exit_code)
