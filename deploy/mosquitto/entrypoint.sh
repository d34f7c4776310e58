#!/bin/sh
# Make the service account (MQTT_USERNAME/MQTT_PASSWORD, used by the bridge and the api) and
# the ACL file, then run the broker. Robots' accounts stay in the password file across
# restarts; add and remove them with devices.sh (see README, Security).
set -eu
: "${MQTT_USERNAME:?set MQTT_USERNAME in .env}"
: "${MQTT_PASSWORD:?set MQTT_PASSWORD in .env}"
case "$MQTT_USERNAME" in
  *[+#/:]*) echo "MQTT_USERNAME must not contain + # / or :" >&2; exit 2 ;;
esac
if [ -f /mosquitto/data/passwd ]; then
  mosquitto_passwd -b /mosquitto/data/passwd "$MQTT_USERNAME" "$MQTT_PASSWORD"
else
  mosquitto_passwd -b -c /mosquitto/data/passwd "$MQTT_USERNAME" "$MQTT_PASSWORD"
fi
# The same layout as the embedded server's (iotstream.broker.accounts): robots by user name.
cat > /mosquitto/data/acl <<ACL
user $MQTT_USERNAME
topic read sensors/#
topic read orin/+/command/ack
topic read orin/+/command/result
topic write orin/+/command

pattern write sensors/%u/#
pattern read orin/%u/command
pattern write orin/%u/command/ack
pattern write orin/%u/command/result
ACL
chown mosquitto:mosquitto /mosquitto/data/passwd /mosquitto/data/acl
chmod 0600 /mosquitto/data/passwd /mosquitto/data/acl
exec mosquitto -c /mosquitto/config/mosquitto.conf
