const bump = require('../../counter');

jest.retryTimes(2, { logErrorsBeforeRetry: true });

describe('math', () => {
  test('adds', () => {
    expect(1 + 2).toBe(3);
  });

  test('fails every time', () => {
    expect(2 * 2).toBe(5);
  });

  describe('flaky', () => {
    test('passes on the third run', () => {
      expect(bump('jest-third-run')).toBe(3);
    });
  });

  test.skip('skipped', () => {});
  test.todo('todo');
});
