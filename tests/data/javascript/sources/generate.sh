#!/bin/sh
# Regenerates the reports beside this folder by running the real tools on these sources.
# Usage: sh generate.sh   (needs node >= 20.19 and the npm registry)
# The reports keep the absolute paths of the fixed work directory below.
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=$(dirname "$here")
work=/tmp/testlens-js-reports

rm -rf "$work"
mkdir -p "$work"
cp -R "$here"/. "$work"/
cd "$work" || exit 1
echo '{"private": true}' > package.json
npm install --no-audit --no-fund jest@30.5.2 @playwright/test@1.65.1 mocha@12.0.3 || exit 1

# Each run starts with fresh counters, so the flaky tests fail the same number of times.
reset() { rm -rf "$work/.counters"; }

cd "$work/jest" || exit 1
reset; npx jest --rootDir . --json --outputFile="$out/jest.json"
reset; FORCE_COLOR=1 npx jest --rootDir . --json --outputFile="$out/jest-color.json"

cd "$work/playwright" || exit 1
reset; PLAYWRIGHT_JSON_OUTPUT_NAME="$out/playwright.json" npx playwright test
cp broken/broken.spec.js tests/
PLAYWRIGHT_JSON_OUTPUT_NAME="$out/playwright-load-error.json" npx playwright test

cd "$work/mocha" || exit 1
reset; npx mocha --retries 2 --reporter json --reporter-option output="$out/mocha.json" test/
reset
exit 0
