#!/bin/sh
# start-prometheus: a configuration from the environment, then Prometheus in the foreground.
#   PORT0           listen port (default 9090)
#   SCRAPE_TARGETS  comma-separated host:port list scraped at /metrics besides Prometheus itself
#   SCRAPE_INTERVAL scrape interval (default 15s)
set -eu
port=${PORT0:-9090}
{
  echo "global:"
  echo "  scrape_interval: ${SCRAPE_INTERVAL:-15s}"
  echo "scrape_configs:"
  echo "  - job_name: prometheus"
  echo "    static_configs:"
  echo "      - targets: ['127.0.0.1:$port']"
  if [ -n "${SCRAPE_TARGETS:-}" ]; then
    echo "  - job_name: capstan"
    echo "    static_configs:"
    echo "      - targets:"
    echo "$SCRAPE_TARGETS" | tr ',' '\n' | while read -r t; do
      [ -n "$t" ] && echo "          - '$t'"
    done
  fi
} > /tmp/prometheus.yml
exec prometheus --config.file=/tmp/prometheus.yml --storage.tsdb.path=/prometheus \
  --web.listen-address="0.0.0.0:$port" --storage.tsdb.retention.time="${RETENTION:-1d}"
