#!/bin/sh
# Robots' MQTT accounts in the compose stack's broker:
#   docker compose exec mosquitto sh /mosquitto/config/devices.sh add robot7
#   docker compose exec mosquitto sh /mosquitto/config/devices.sh remove robot7
# `add` prints the new password once; both make the broker reload its accounts (SIGHUP): a
# new robot connects at once, a removed one is disconnected, nobody else is.
set -eu
PASSWD="${PASSWD:-/mosquitto/data/passwd}"
BROKER_PID="${BROKER_PID:-1}"  # mosquitto runs as PID 1 of its container (exec in entrypoint.sh)
OWNER="${OWNER-mosquitto:mosquitto}"  # the broker drops to this user and must read the file
usage() { echo "usage: $0 add|remove NAME" >&2; exit 2; }
[ $# -eq 2 ] || usage
name="$2"
case "$name" in
  ""|*[+#/:]*|" "*|*" ") echo "$name cannot be an MQTT user name (no + # / : or outer blanks)" >&2; exit 2 ;;
esac
case "$1" in
  add)
    password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    mosquitto_passwd -b "$PASSWD" "$name" "$password"
    echo "MQTT account of $name (the password is shown this once):"
    echo "  username  $name"
    echo "  password  $password"
    ;;
  remove) mosquitto_passwd -D "$PASSWD" "$name" ;;
  *) usage ;;
esac
[ -z "$OWNER" ] || chown "$OWNER" "$PASSWD"
kill -HUP "$BROKER_PID"
echo "the broker reloaded its accounts"
