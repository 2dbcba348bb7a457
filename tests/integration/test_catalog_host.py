"""Catalog kinds on the real Debian 12 test host: PostgreSQL, and databases
with users inside MariaDB and PostgreSQL.

The test host is a chroot sharing this machine's network namespace, so a
server it starts binds this machine's loopback port: a port already taken by
something else fails the test at once, saying which.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable

import pytest

from brokeforge.lifecycle.models import ManagedRecord, RecordStatus
from brokeforge.packages.models import Database, SqlDatabase
from brokeforge.packages.service import request_action
from brokeforge.servers.models import Server
from tests.conftest import run_now
from tests.testhosts.debian_host import hold_dpkg_lock
from tests.testhosts.fixtures import DebianTestHost

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.debian_host,
    pytest.mark.timeout(900),
]

# Quotes, a shell substitution and a SQL comment: all must stay inert.
AWKWARD_PASSWORD = "pa'ss\"w$(touch${IFS}/tmp/pwned);--`x`\\"


@pytest.fixture
def server(make_server: Callable[..., Server], debian_host: DebianTestHost) -> Server:
    key = debian_host.client_key.export_private_key().decode()
    return make_server("deb12", port=debian_host.port, private_key=key)


def require_free_port(port: int, what: str) -> None:
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            pytest.fail(
                f"127.0.0.1:{port} is already in use on this machine, so {what} "
                "on the test host (which shares the network) cannot listen there: "
                "stop whatever holds it (another helper's test host?) and rerun"
            )


def act(server: Server, kind: str, action: str, **params: str) -> Database | None:
    operation = run_now(request_action(server, kind, action, params=params or None))
    assert operation.is_finished
    return Database.objects.filter(server=server, kind=kind).first()


def act_on(record: ManagedRecord, action: str) -> SqlDatabase | None:
    operation = run_now(
        request_action(record.server, "database", action, record_id=record.pk)
    )
    assert operation.is_finished
    return SqlDatabase.objects.filter(pk=record.pk).first()


def create_db(server: Server, **params: str) -> SqlDatabase:
    operation = run_now(request_action(server, "database", "create", params=params))
    return SqlDatabase.objects.get(pk=operation.record_id)


def on_host(host: DebianTestHost, command: str) -> str:
    return host.run(command, check=False).stdout.strip()


def is_installed(host: DebianTestHost, package: str) -> bool:
    status = on_host(host, f"dpkg-query -W -f='${{db:Status-Status}}' {package}")
    return status == "installed"


def login_with(host: DebianTestHost, command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` on the host with AWKWARD_PASSWORD in /root/pw (0600)."""
    secret = host.root / "root/pw"
    secret.write_text(AWKWARD_PASSWORD)
    secret.chmod(0o600)
    try:
        return host.run(command, check=False)
    finally:
        secret.unlink()


def psql(host: DebianTestHost, sql: str) -> str:
    return on_host(host, f'cd / && runuser -u postgres -- psql -X -tA -c "{sql}"')


def test_postgresql_installs_after_a_held_lock_hosts_a_database_and_is_removed(
    server: Server, debian_host: DebianTestHost
):
    require_free_port(5432, "PostgreSQL")
    with hold_dpkg_lock(debian_host.root):
        record = act(server, "postgresql", "install")
    assert record is not None
    assert record.status == RecordStatus.FAILED
    assert "Could not get lock /var/lib/dpkg/lock-frontend" in record.error_message

    record = act(server, "postgresql", "retry")
    assert record is not None
    assert record.status == RecordStatus.ACTIVE, record.error_message
    assert re.fullmatch(r"15\.\d+.*", record.version), record.version

    database = create_db(
        server,
        engine="postgresql",
        name="shop",
        user="shop_rw",
        password=AWKWARD_PASSWORD,
    )
    assert database.status == RecordStatus.ACTIVE, database.error_message
    # The file that carried the password is gone.
    leftovers = "grep -rlF 'IFS}/tmp/pwned' /tmp /root 2>/dev/null || echo none"
    assert on_host(debian_host, leftovers) == "none"
    assert (
        psql(debian_host, "SELECT datname FROM pg_database WHERE datname='shop'")
        == "shop"
    )
    assert (
        psql(
            debian_host,
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname='shop'",
        )
        == "shop_rw"
    )
    # The user logs in over TCP with exactly the password given; the
    # substitution in it ran nowhere.
    login = login_with(
        debian_host,
        'PGPASSWORD="$(cat /root/pw)" psql -X -tA -h 127.0.0.1 -U shop_rw '
        "-d shop -c 'SELECT current_user'",
    )
    assert login.stdout.strip() == "shop_rw", login.stderr
    assert on_host(debian_host, "test -e /tmp/pwned || echo inert") == "inert"
    operation = database.current_operation()
    assert operation is not None
    assert "pa'ss" not in operation.output + str(operation.params)

    with pytest.raises(Exception, match="cannot be removed while database shop"):
        request_action(server, "postgresql", "remove", params={"data": "delete"})

    assert act_on(database, "drop") is None
    assert (
        psql(debian_host, "SELECT count(*) FROM pg_database WHERE datname='shop'")
        == "0"
    )
    assert (
        psql(debian_host, "SELECT count(*) FROM pg_roles WHERE rolname='shop_rw'")
        == "0"
    )

    assert act(server, "postgresql", "remove", data="delete") is None
    assert not is_installed(debian_host, "postgresql-15")
    assert on_host(debian_host, "test -e /var/lib/postgresql || echo gone") == "gone"


def test_a_mariadb_database_fails_while_the_server_is_down_and_retry_creates_it(
    server: Server, debian_host: DebianTestHost
):
    require_free_port(3306, "MariaDB")
    mariadb = act(server, "mariadb", "install")
    assert mariadb is not None
    assert mariadb.status == RecordStatus.ACTIVE, mariadb.error_message
    debian_host.run("/etc/init.d/mariadb stop")

    database = create_db(
        server, engine="mariadb", name="blog", user="blog", password=AWKWARD_PASSWORD
    )
    assert database.status == RecordStatus.FAILED
    assert "Can't connect to local server through socket" in database.error_message

    debian_host.run("/etc/init.d/mariadb start")
    database = act_on(database, "retry")
    assert database is not None
    assert database.status == RecordStatus.ACTIVE, database.error_message
    login = login_with(
        debian_host,
        'MYSQL_PWD="$(cat /root/pw)" mariadb -h 127.0.0.1 -u blog -N '
        "-e 'SELECT DATABASE()' blog",
    )
    assert login.stdout.strip() == "blog", login.stderr
    assert on_host(debian_host, "test -e /tmp/pwned || echo inert") == "inert"

    # A drop that fails leaves the record failed, not active.
    debian_host.run("/etc/init.d/mariadb stop")
    database = act_on(database, "drop")
    assert database is not None
    assert database.status == RecordStatus.FAILED
    debian_host.run("/etc/init.d/mariadb start")
    assert act_on(database, "retry") is None
    assert on_host(debian_host, "mariadb -N -e \"SHOW DATABASES LIKE 'blog'\"") == ""
    users = "mariadb -N -e \"SELECT count(*) FROM mysql.user WHERE User='blog'\""
    assert on_host(debian_host, users) == "0"

    assert act(server, "mariadb", "remove", data="delete") is None
    assert not is_installed(debian_host, "mariadb-server")


def record_of(kind: str, operation_record_id: int) -> ManagedRecord | None:
    from brokeforge.packages.registry import get_kind

    found: ManagedRecord | None = (
        get_kind(kind).records().filter(pk=operation_record_id).first()
    )
    return found


def add(server: Server, kind: str, **params: str) -> ManagedRecord:
    operation = run_now(request_action(server, kind, "install", params=params))
    record = record_of(kind, operation.record_id)
    assert record is not None
    return record


def act_on_kind(record: ManagedRecord, action: str) -> ManagedRecord | None:
    kind = record.kind_name()
    run_now(request_action(record.server, kind, action, record_id=record.pk))
    return record_of(kind, record.pk)


def install_after_a_held_lock(
    server: Server, host: DebianTestHost, kind: str
) -> Database:
    """Install `kind` while dpkg is locked (fails with apt's words), then retry."""
    with hold_dpkg_lock(host.root):
        record = act(server, kind, "install")
    assert record is not None
    assert record.status == RecordStatus.FAILED
    assert "Could not get lock /var/lib/dpkg/lock-frontend" in record.error_message
    record = act(server, kind, "retry")
    assert record is not None
    assert record.status == RecordStatus.ACTIVE, record.error_message
    return record


def test_nginx_installs_answers_http_and_is_removed(
    server: Server, debian_host: DebianTestHost
):
    require_free_port(80, "Nginx")
    record = install_after_a_held_lock(server, debian_host, "nginx")
    assert re.fullmatch(r"1\.\d+\.\d+", record.version), record.version

    assert act(server, "nginx", "remove") is None
    assert not is_installed(debian_host, "nginx")
    assert on_host(debian_host, "test -e /etc/nginx || echo gone") == "gone"


def test_a_cron_task_needs_the_scheduler_then_owns_its_file(
    server: Server, debian_host: DebianTestHost
):
    with pytest.raises(Exception, match="needs Scheduler \\(cron\\) on deb12"):
        request_action(
            server,
            "cron_task",
            "add",
            params={"name": "x", "schedule": "@daily", "command": "true"},
        )
    install_after_a_held_lock(server, debian_host, "scheduler")

    # A user the host lacks: the host says so; after adding it, Retry works.
    task = add(
        server,
        "cron_task",
        name="nightly-report",
        schedule="30 2 * * 1-5",
        user="reporter",
        command="echo '50%' > /tmp/report; $(true)",
    )
    assert task.status == RecordStatus.FAILED
    assert task.error_message == (
        "user reporter does not exist on this server (exit status 1)"
    )
    debian_host.run("useradd --system reporter")
    task = act_on_kind(task, "retry")
    assert task is not None
    assert task.status == RecordStatus.ACTIVE, task.error_message
    assert on_host(debian_host, "cat /etc/cron.d/brokeforge-nightly-report").endswith(
        "30 2 * * 1-5 reporter echo '50\\%' > /tmp/report; $(true)"
    )
    assert on_host(debian_host, "stat -c %a /etc/cron.d/brokeforge-nightly-report") == (
        "644"
    )

    assert act_on_kind(task, "remove") is None
    assert on_host(debian_host, "ls /etc/cron.d | grep brokeforge || echo none") == (
        "none"
    )
    assert act(server, "scheduler", "remove") is None
    assert not is_installed(debian_host, "cron")
    debian_host.run("userdel reporter")


def programs_running(host: DebianTestHost, command: str) -> list[int]:
    """The host's processes (and only the host's) running `command`."""
    return [
        pid
        for pid in host.pids()
        if on_host(host, f"tr '\\0' ' ' < /proc/{pid}/cmdline 2>/dev/null").strip()
        == command
    ]


def test_a_supervisor_program_runs_after_its_directory_exists(
    server: Server, debian_host: DebianTestHost
):
    install_after_a_held_lock(server, debian_host, "supervisor")

    program = add(
        server,
        "supervisor_program",
        name="worker",
        command="sleep 31415",
        directory="/srv/bf-worker",
        numprocs="2",
        stopsignal="INT",
        stopwaitsecs="3",
    )
    assert program.status == RecordStatus.FAILED
    reason, log_line = program.error_message.splitlines()
    assert reason.startswith("program worker is not running: worker:worker_00 FATAL")
    # supervisor's own words about the missing directory
    assert log_line.startswith(
        "its log says: supervisor: couldn't chdir to /srv/bf-worker"
    )

    debian_host.run("mkdir -p /srv/bf-worker")
    program = act_on_kind(program, "retry")
    assert program is not None
    assert program.status == RecordStatus.ACTIVE, program.error_message
    status = on_host(debian_host, "supervisorctl status 'worker:*'")
    assert status.count(" RUNNING ") == 2, status
    assert len(programs_running(debian_host, "sleep 31415")) == 2

    with pytest.raises(Exception, match="cannot be removed while program worker x2"):
        request_action(server, "supervisor", "remove")
    assert act_on_kind(program, "remove") is None
    assert programs_running(debian_host, "sleep 31415") == []
    assert act(server, "supervisor", "remove") is None
    assert not is_installed(debian_host, "supervisor")
    debian_host.run("rm -rf /srv/bf-worker")


def test_php_refuses_a_version_the_archive_lacks_and_installs_8_2(
    server: Server, debian_host: DebianTestHost
):
    missing = add(server, "php", version="7.4")
    assert missing.status == RecordStatus.FAILED
    assert missing.error_message.startswith(
        "PHP 7.4 is not in this server's package archive, which offers: 8.2"
    )
    assert act_on_kind(missing, "remove") is None

    php = add(server, "php", version="8.2", default_cli="yes")
    assert php.status == RecordStatus.ACTIVE, php.error_message
    php.refresh_from_db()
    assert php.label() == "PHP 8.2 (default CLI) on deb12"
    assert on_host(debian_host, "test -S /run/php/php8.2-fpm.sock && echo up") == "up"
    assert on_host(debian_host, "php -r 'echo PHP_MAJOR_VERSION;'") == "8"
    modules = on_host(debian_host, "php8.2 -m")
    for module in ("mbstring", "pdo_mysql", "pdo_pgsql", "intl", "Zend OPcache"):
        assert module in modules

    assert act_on_kind(php, "remove") is None
    assert on_host(debian_host, "command -v php8.2 || echo gone") == "gone"


def http_get(host: DebianTestHost, domain: str) -> str:
    """What the host's nginx answers for `domain` (status line and body)."""
    request = f"GET / HTTP/1.0\\r\\nHost: {domain}\\r\\n\\r\\n"
    return on_host(
        host,
        "timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/80; "
        f'printf "{request}" >&3; cat <&3\'',
    )


def git_on_host(host: DebianTestHost, script: str) -> None:
    host.run(
        "set -e; export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t "
        f"GIT_COMMITTER_EMAIL=t@t; {script}"
    )


def test_a_php_site_is_provisioned_deployed_from_git_and_removed(
    server: Server, debian_host: DebianTestHost
):
    require_free_port(80, "Nginx")
    site_params = {
        "domain": "shop.test",
        "aliases": "www.shop.test",
        "php_version": "8.2",
    }
    with pytest.raises(Exception, match="Site needs Nginx on deb12 to be active"):
        request_action(server, "site", "provision", params=site_params)
    for kind, params in (("nginx", {}), ("php", {"version": "8.2"})):
        if kind == "nginx":
            assert act(server, "nginx", "install") is not None
        else:
            assert add(server, "php", **params).status == RecordStatus.ACTIVE

    # nginx stopped: the provision fails with the host's words; once it
    # runs again, Retry provisions the site.
    debian_host.run("/etc/init.d/nginx stop")
    site = add(server, "site", **site_params)
    assert site.status == RecordStatus.FAILED
    assert "nginx" in site.error_message
    debian_host.run("/etc/init.d/nginx start")
    site = act_on_kind(site, "retry")
    assert site is not None
    assert site.status == RecordStatus.ACTIVE, site.error_message
    page = http_get(debian_host, "www.shop.test")
    assert page.startswith("HTTP/1.1 200 OK"), page
    assert "BrokeForge site shop.test on PHP 8.2." in page

    # A repository the test makes on the host, with a deploy script that
    # fails until /srv/ready exists.
    repo = add(
        server,
        "site_git",
        domain="shop.test",
        url="/srv/git/shop.git",
        branch="main",
        deploy_script="test -e /srv/ready\necho deploy script ran",
    )
    # No repository at that path yet: git says so, and Retry works once
    # the test made it.
    assert repo.status == RecordStatus.FAILED
    assert repo.error_message.endswith(
        "Please make sure you have the correct access rights\n"
        "and the repository exists. (exit status 128)"
    )
    debian_host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q git")
    git_on_host(
        debian_host,
        "git init -q -b main /srv/src && cd /srv/src && "
        "printf '<?php echo \"release one\";\\n' > index.php && "
        "git add index.php && git commit -q -m one && "
        "git clone -q --bare /srv/src /srv/git/shop.git",
    )
    repo = act_on_kind(repo, "retry")
    assert repo is not None
    assert repo.status == RecordStatus.ACTIVE, repo.error_message
    assert "release one" in http_get(debian_host, "shop.test")
    assert repo.deploy_public_key.startswith("ssh-ed25519 ")
    assert on_host(debian_host, "stat -c %a /etc/brokeforge/deploy-keys/shop.test") == (
        "600"
    )

    git_on_host(
        debian_host,
        "cd /srv/src && printf '<?php echo \"release two\";\\n' > index.php && "
        "git commit -q -am two && git push -q /srv/git/shop.git main",
    )
    deployment = add(server, "deployment", domain="shop.test")
    assert deployment.status == RecordStatus.FAILED
    assert deployment.error_message.endswith(
        "the deploy script failed with exit status 1 (exit status 1)"
    )
    debian_host.run("touch /srv/ready")
    deployment = act_on_kind(deployment, "retry")
    assert deployment is not None
    assert deployment.status == RecordStatus.ACTIVE, deployment.error_message
    operation = deployment.current_operation()
    assert operation is not None
    assert "deploy script ran" in operation.output
    head = on_host(debian_host, "git -C /srv/src rev-parse HEAD")
    assert deployment.commit() == head
    assert "release two" in http_get(debian_host, "shop.test")

    with pytest.raises(Exception, match="cannot be removed while repository"):
        request_action(
            server, "site", "remove", record_id=site.pk, params={"files": "delete"}
        )
    assert act_on_kind(repo, "remove") is None
    operation = run_now(
        request_action(
            server, "site", "remove", record_id=site.pk, params={"files": "delete"}
        )
    )
    assert operation.state == "succeeded", operation.error_message
    assert on_host(debian_host, "test -e /var/www/shop.test || echo gone") == "gone"
    leftover = "ls /etc/nginx/sites-enabled /etc/php/8.2/fpm/pool.d | grep brokeforge"
    assert on_host(debian_host, f"{leftover} || echo none") == "none"

    assert act_on_kind(deployment, "remove") is None
    php = get_kind_records(server, "php")[0]
    assert act_on_kind(php, "remove") is None
    assert act(server, "nginx", "remove") is None
    debian_host.run("rm -rf /srv/src /srv/git /srv/ready /etc/brokeforge")


def get_kind_records(server: Server, kind: str) -> list[ManagedRecord]:
    from brokeforge.packages.registry import get_kind

    return list(get_kind(kind).records(server))
