# iotstream with the Kafka and Redis extras: one image for every role (run, bridge, processor, api);
# with the device SDK's too, so that `iotstream simulate` and `iotstream run --simulate N` work in it.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[kafka,redis,device]' && mkdir /data && chown nobody /data
ENV IOTSTREAM_DATA_DIR=/data
USER nobody
EXPOSE 8081
ENTRYPOINT ["iotstream"]
CMD ["run", "--http-host", "0.0.0.0", "--mqtt-host", "0.0.0.0"]
