// Two projects run the same specs; one retry lets the flaky spec pass on its second attempt.
const { defineConfig } = require('@playwright/test');

module.exports = defineConfig({
  testDir: './tests',
  retries: 1,
  timeout: 500,
  workers: 1,
  reporter: 'json',
  projects: [{ name: 'alpha' }, { name: 'beta' }],
});
