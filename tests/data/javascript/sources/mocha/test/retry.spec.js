// Run with --retries 2: mocha reports only each test's final attempt.
const assert = require('assert');
const bump = require('../../counter');

describe('retry', function () {
  it('passes', function () {
    assert.strictEqual(1 + 1, 2);
  });

  describe('flaky', function () {
    it('passes on the third attempt', function () {
      assert.strictEqual(bump('mocha-third-attempt'), 3);
    });
  });

  it('fails every time', function () {
    assert.strictEqual(2 * 2, 5);
  });

  it('times out', function (done) {
    this.timeout(50);
    setTimeout(done, 1000);
  });

  it.skip('skipped', function () {});
});

describe('broken hook', function () {
  before(function () {
    throw new Error('setup failed');
  });

  it('never runs', function () {});
});
