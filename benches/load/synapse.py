"""Installs Synapse from PyPI into a throwaway directory and configures it for the load
benchmark: PostgreSQL (its production database), open registration, rate limits off.

    python3 benches/load/synapse.py DIR PORT POSTGRES_DSN_DATABASE

prints the command that starts it. Nothing of Synapse is kept in the repository."""

import os
import subprocess
import sys

directory, port, database = sys.argv[1], int(sys.argv[2]), sys.argv[3]
venv = os.path.join(directory, "venv")
python = os.path.join(venv, "bin", "python")
if not os.path.exists(python):
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
if subprocess.run([python, "-c", "import synapse, psycopg2"], capture_output=True).returncode != 0:
    subprocess.run([python, "-m", "pip", "install", "-q", "matrix-synapse[postgres]"], check=True)

config = os.path.join(directory, "homeserver.yaml")
data = os.path.join(directory, "data")
os.makedirs(data, exist_ok=True)
if not os.path.exists(config):
    subprocess.run(
        [python, "-m", "synapse.app.homeserver", "--server-name", "localhost",
         "--config-path", config, "--generate-config", "--report-stats=no",
         "--data-directory", data],
        check=True, capture_output=True,
    )

script = f"""
import yaml
path = {config!r}
with open(path) as f:
    c = yaml.safe_load(f)
c["listeners"] = [{{"port": {port}, "bind_addresses": ["127.0.0.1"], "type": "http",
                    "tls": False, "x_forwarded": False,
                    "resources": [{{"names": ["client"], "compress": False}}]}}]
c["database"] = {{"name": "psycopg2", "args": {{"user": "postgres", "host": "127.0.0.1",
                  "port": 5432, "database": {database!r}, "cp_min": 5, "cp_max": 10}}}}
c["enable_registration"] = True
c["enable_registration_without_verification"] = True
unlimited = {{"per_second": 1000000, "burst_count": 1000000}}
for key in ["rc_message", "rc_registration", "rc_admin_redaction", "rc_3pid_validation",
            "rc_invites_per_room", "rc_invites_per_user", "rc_invites_per_issuer",
            "rc_joins_per_room", "rc_presence", "rc_delayed_event_mgmt", "rc_room_creation",
            "rc_reports", "rc_send_knock", "rc_media_create"]:
    c[key] = unlimited
c["rc_login"] = {{"address": unlimited, "account": unlimited, "failed_attempts": unlimited}}
c["rc_joins"] = {{"local": unlimited, "remote": unlimited}}
c["trusted_key_servers"] = []
c["suppress_key_server_warning"] = True
c["presence"] = {{"enabled": False}}
c["log_config"] = None
c.pop("log_config")
with open(path, "w") as f:
    yaml.safe_dump(c, f)
"""
subprocess.run([python, "-c", script], check=True)
print(f"{python} -m synapse.app.homeserver --config-path {config}")
