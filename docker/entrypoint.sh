#!/bin/sh
# Entry point of the pulmoseg image.
#
# 1. Raises the soft stack limit to PULMOSEG_STACK_KIB (default 32768 KiB): Holoscan (the MONAI
#    Deploy engine) warns below 8 MiB, and Kubernetes has no per-pod ulimit, so it has to
#    happen here, before the Python process and its threads start.
# 2. For every PULMOSEG_<NAME>_FILE variable, reads the file into PULMOSEG_<NAME> (e.g. the auth
#    token or the quality-database URL mounted from a Secret), so secrets never sit in the pod
#    spec; an unreadable file stops the container with a clear message.
# 3. Runs `pulmoseg <args>` when the first argument is a pulmoseg subcommand or an option,
#    otherwise runs the arguments as a command (e.g. `python3 /etc/pulmoseg/fetch-model.py`).
set -eu

stack="${PULMOSEG_STACK_KIB:-32768}"
if ! ulimit -s "$stack" 2>/dev/null; then
  echo "pulmoseg-entrypoint: cannot raise the stack limit to ${stack} KiB" \
    "(hard limit: $(ulimit -H -s)); Holoscan may warn about its stack" >&2
fi

for name in $(env | sed -n 's/^\(PULMOSEG_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
  path=$(printenv "${name}_FILE")
  if [ ! -r "$path" ]; then
    echo "pulmoseg-entrypoint: ${name}_FILE points at '${path}', which cannot be read" >&2
    exit 64
  fi
  value=$(cat "$path")
  export "${name}=${value}"
  unset "${name}_FILE"
done

case "${1:-}" in
  "" | -* | serve | segment | phantom | train | export | evaluate | demo)
    set -- pulmoseg "$@" ;;
esac
exec "$@"
