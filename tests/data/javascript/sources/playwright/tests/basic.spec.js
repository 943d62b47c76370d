// No `page` fixture anywhere, so no browser is needed.
const { test, expect } = require('@playwright/test');
const bump = require('../../counter');

test('passes', () => {
  console.log('hello from stdout');
  expect(1 + 1).toBe(2);
});

test.describe('outer', () => {
  test.describe('inner', () => {
    test('flaky: passes on the second attempt', ({}, testInfo) => {
      expect(bump(`pw-flaky-${testInfo.project.name}`)).toBe(2);
    });
  });

  test('fails every time', () => {
    console.error('about to fail');
    expect(2 * 2).toBe(5);
  });

  test.skip('skipped', () => {});

  test('times out', async () => {
    await new Promise((resolve) => setTimeout(resolve, 5000));
  });

  test('expected to fail and fails', () => {
    test.fail();
    expect(true).toBe(false);
  });

  test('expected to fail but passes', () => {
    test.fail();
    expect(true).toBe(true);
  });
});
