"""Root causes: why a flaky or failing test fails, from its failure text and its behaviour.

The categories are those of the published flaky-test studies (Luo et al. 2014, Eck et al.
2019, Datadog's categories) under the names Unfold CI uses for the common ones. Two kinds of
evidence feed one verdict:

* the text of the failed attempts: specific exception names and phrases (a refused
  connection, a data race report, "Timeout of 2000ms exceeded"), and the expected and
  actual values of failed assertions (the same items in another order, floats a rounding
  error apart, two dates an hour apart);
* the test's behaviour: attempts that run into the timeout, failures concentrated on one
  environment, runner, OS or shard (Fisher's exact test per value, Holm-corrected), failures
  only after a certain other test ran earlier in the same worker (the same test), other
  tests failing in the same runs (one shared cause, reported as a cluster), and the
  pass/fail sequence (intermittent or a regression).

A rule only fires on evidence specific enough to be right most of the time, and below
:data:`CONFIDENCE_THRESHOLD` the answer is ``unknown``: a wrong category sends whoever fixes
the test down the wrong path, an honest "unknown" does not. ``docs/root-causes.md``
describes every rule and how the signals combine.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Literal, NamedTuple, get_args

Category = Literal[
    "timing_issue",
    "network_dependency",
    "race_condition",
    "environment_specific",
    "order_dependency",
    "resource_leak",
    "time_dependency",
    "randomness",
    "unordered_collection",
    "floating_point",
    "io",
    "async_wait",
    "too_restrictive_range",
    "infrastructure",
    "unknown",
]
CATEGORIES: tuple[Category, ...] = get_args(Category)

CONFIDENCE_THRESHOLD = 0.6
"""Below this the verdict is ``unknown``. Generic hints (the word "timeout", a random number
generator in the stack) sit at 0.5 on their own, so only a specific rule, or two signals
that agree, gets past it."""

SIGNIFICANCE = 0.05
"""Family-wise error rate of the environment and order tests (after Holm's correction)."""
NEAR_TIMEOUT = 0.9
"""A failing attempt that ran this share of the timeout or more was stopped by it."""
CLUSTER_SHARE = 0.75
"""Another test belongs to this test's cluster when it failed in this share of this test's
failed runs (and in two at least)."""
CLUSTER_INFRASTRUCTURE = 3
"""A cluster of this many other tests, without a more specific shared cause, is blamed on
the infrastructure."""
MAX_TEXT_CHARS = 30_000
"""Text read per failed attempt: the message and the top of the stack say what happened."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt."""

    error_type: str = ""
    message: str = ""
    stack: str = ""
    duration_ms: float | None = None
    environment: str | None = None
    shard: str | None = None
    run_id: str | None = None
    preceding: tuple[str, ...] = ()
    """Tests run before it in the same run and worker, in order."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything known about one test's failures; every field but ``failures`` optional."""

    failures: Sequence[Failure] = ()
    """Failed attempts, newest first."""
    outcomes: Sequence[str] = ()
    """Per run, oldest first: "passed", "failed" or "flaky"."""
    groups: Mapping[str, Mapping[str, tuple[int, int]]] = field(default_factory=dict)
    """Dimension ("environment", "runner", "os", "shard") -> value -> (failed runs, runs)."""
    passing_durations_ms: Sequence[float] = ()
    timeout_ms: float | None = None
    preceding_when_passed: Sequence[tuple[str, ...]] = ()
    """Tests run before it in the same worker, one tuple per passing run."""
    co_failing: Sequence[tuple[str, int]] = ()
    """(other test, runs both failed), most first."""
    failed_runs: int = 0
    """Runs this test failed in (what ``co_failing`` counts are shares of)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer: a category, how sure (0-1), one sentence naming the evidence, and the
    other tests that share the cause when a cluster was found. For ``unknown`` the
    confidence is that of the strongest hint, which fell short of the threshold."""

    category: Category
    confidence: float
    explanation: str
    cluster: tuple[str, ...] = ()


# --- text rules --------------------------------------------------------------------------

_TEXT_CATEGORIES = frozenset(CATEGORIES) - {"unknown"}


@dataclass(frozen=True, slots=True)
class _Rule:
    category: Category
    confidence: float
    evidence: str
    pattern: re.Pattern[str]
    beats: frozenset[Category]
    """Categories whose hits in the same attempt this rule's hit overrides: a read timeout
    on a socket is a network failure, not a timing one."""


def _codes(*names: str) -> str:
    """Error codes such as ECONNREFUSED, matched as whole words and in capitals only (a
    case-blind ENOTFOUND would match inside FileNotFoundError)."""
    return r"(?-i:\b(?:" + "|".join(names) + r")\b)"


def _rule(
    category: Category,
    confidence: float,
    evidence: str,
    *alternatives: str,
    beats: Iterable[Category] = (),
    case: bool = False,
) -> _Rule:
    flags = 0 if case else re.IGNORECASE
    pattern = re.compile("|".join(f"(?:{a})" for a in alternatives), flags | re.MULTILINE)
    return _Rule(category, confidence, evidence, pattern, frozenset(beats))


_NETWORK_BEATS: tuple[Category, ...] = ("timing_issue", "io", "async_wait")
_RULES: tuple[_Rule, ...] = (
    # network
    _rule(
        "network_dependency",
        0.9,
        "a refused or reset connection",
        _codes("ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE"),
        r"ConnectionRefusedError|Connection refused|actively refused|ConnectionResetError",
        r"Connection reset|socket hang up|ConnectionAbortedError|Broken pipe",
        r"RemoteDisconnected|ServerDisconnectedError",
        r"Connection closed by (?:peer|remote)|unexpected EOF while reading|Connection aborted",
        beats=_NETWORK_BEATS,
    ),
    _rule(
        "network_dependency",
        0.9,
        "a failed name lookup",
        _codes("ENOTFOUND", "EAI_AGAIN"),
        r"UnknownHostException|getaddrinfo|Name or service not known",
        r"Temporary failure in name resolution|nodename nor servname|Could not resolve host",
        r"no such host|NameResolutionError|ERR_NAME_NOT_RESOLVED|socket\.gaierror",
        beats=_NETWORK_BEATS,
    ),
    _rule(
        "network_dependency",
        0.9,
        "a network exception",
        r"java\.net\.\w+Exception|SocketTimeoutException|NoRouteToHostException",
        r"HttpHostConnectException|ConnectTimeoutException|SSLHandshakeException",
        r"requests\.exceptions\.\w+|urllib3\.exceptions\.\w+|MaxRetryError|NewConnectionError",
        r"HTTPS?ConnectionPool|httpx\.(?:Connect|Read|Write|Pool)?(?:Error|Timeout)",
        _codes("ETIMEDOUT", "ESOCKETTIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ESERVFAIL"),
        r"aiohttp\.client_exceptions|ClientConnectorError|urlopen error",
        r"Network is unreachable|No route to host|Host is unreachable",
        r"net::ERR_[A-Z_]+|\bfetch failed|FetchError|Failed to fetch|HttpRequestException",
        r"System\.Net\.(?:Sockets\.)?\w*Exception|WebException|dial tcp|\bi/o timeout",
        r"Net::(?:OpenTimeout|ReadTimeout)|Faraday::(?:ConnectionFailed|TimeoutError)",
        r"ServerSelectionTimeoutError|MongoServerSelectionError|MongoNetworkError",
        r"could not connect to server|Can't connect to (?:local )?MySQL server",
        r"Communications link failure|redis\.exceptions\.ConnectionError|StatusCode\.UNAVAILABLE",
        r"failed to connect to all addresses|CERTIFICATE_VERIFY_FAILED|TLS handshake timeout",
        beats=_NETWORK_BEATS,
    ),
    _rule(
        "network_dependency",
        0.85,
        "an unavailable upstream service",
        r"\b(?:502 Bad Gateway|503 Service Unavailable|504 Gateway Time-?out)\b",
        r"\b429 Too Many Requests\b|\brate limit(?:ed| exceeded)\b",
        r"status(?: code)?:? (?:429|502|503|504)\b|<Response \[(?:429|502|503|504)\]>",
        r"\bFailed to download\b",
        beats=_NETWORK_BEATS,
    ),
    # Luo et al. count a local port that another test or process still holds as a network
    # dependency: the test needs a fixed port on the machine.
    _rule(
        "network_dependency",
        0.8,
        "a local port already taken",
        r"(?-i:\bEADDRINUSE\b)|Address already in use|BindException|port is already allocated",
        beats=_NETWORK_BEATS,
    ),
    _rule(
        "network_dependency",
        0.75,
        "a connection error",
        r"\bConnectionError\b|\bConnectException\b|\bSocketException\b|\bSSLError\b",
        beats=_NETWORK_BEATS,
    ),
    _rule(
        "network_dependency",
        0.5,
        "networking code in the stack",
        r"urllib3/|requests/adapters|http/client\.py|/socket\.py|aiohttp/|httpx/|okhttp3",
        r"System\.Net\.Http|net/http",
    ),
    # timeouts
    _rule(
        "timing_issue",
        0.85,
        "a test timeout",
        r"Timeout of \d+ ?ms exceeded|Exceeded timeout of \d+ ?ms for a (?:test|hook)",
        r"Test timeout of \d+ ?ms exceeded|Timeout >\s?[\d.]+s|\+{3,} Timeout \+{3,}",
        r"TestTimedOutException|test timed out after|Test exceeded Timeout value",
        r"Test execution timed out|exceeded execution timeout|execution exceeded timeout of",
        r"execution timed out after|did not complete within|Timeout::Error|execution expired",
        r"TimeoutExpired|test took too long",
    ),
    _rule(
        "timing_issue",
        0.75,
        "an operation that timed out",
        r"java\.util\.concurrent\.TimeoutException|System\.TimeoutException",
        r"asyncio\.(?:exceptions\.)?TimeoutError|concurrent\.futures\.\w*\.?TimeoutError",
        r"^TimeoutError\b|^(?:E\s+)?TimeoutError:|context deadline exceeded|DeadlineExceeded",
        r"timed out after \d+(?:\.\d+)? ?(?:ms|s|sec|seconds|milliseconds)\b",
        r"(?-i:\bTimedOut\b)",
    ),
    _rule("timing_issue", 0.5, "a timeout", r"\btimed? ?out\b|\btimeout\b"),
    # asynchronous waits
    _rule(
        "async_wait",
        0.9,
        "a UI element that was not ready",
        r"StaleElementReference|ElementNotInteractable|ElementClickIntercepted",
        r"ElementNotVisible|Unable to locate element|element (?:is )?not (?:interactable|visible)",
        r"is not clickable at point|Other element would receive the click",
        r"waiting for (?:visibility|presence|element|selector|locator|getBy|navigation)",
        r"Expected condition failed|Timed out \d+ ?ms waiting for|locator\.\w+: Timeout",
        r"waitFor\w*: Timeout|Timed out retrying after|Capybara::ElementNotFound",
        r"Capybara::ExpectationNotMet|NoMatchingViewException|AppNotIdleException",
        beats=("timing_issue",),
    ),
    _rule(
        "async_wait",
        0.88,
        "a condition awaited in vain",
        r"ConditionTimeoutException|was not fulfilled within|did not become true within",
        r"Timed out waiting for|timed out waiting|never became|not wrapped in act\(",
        r"Cannot log after tests are done|forget to wait for something async",
        r"coroutine '[\w.<>]+' was never awaited|Task was destroyed but it is pending",
        r"Unable to find an? (?:element|accessible element|role|label)",
        r"selenium\S*TimeoutException|org\.openqa\.selenium\.TimeoutException",
        beats=("timing_issue",),
    ),
    # concurrency
    _rule(
        "race_condition",
        0.92,
        "a concurrency error",
        r"ConcurrentModificationException|WARNING: DATA RACE|\bdata race\b|ThreadSanitizer",
        r"concurrent map (?:writes|read and map write|iteration and map write)",
        r"Collection was modified; enumeration operation may not execute",
        r"dictionary changed size during iteration|Set changed size during iteration",
        r"all goroutines are asleep - deadlock|Deadlock found when trying to get lock",
        r"\bdeadlock detected\b|DbUpdateConcurrencyException|OptimisticLock\w*",
        r"StaleObjectStateException|could not serialize access due to concurrent",
        r"IllegalMonitorStateException|BrokenBarrierException|\brace condition\b",
        beats=("timing_issue", "io"),
    ),
    _rule(
        "race_condition",
        0.75,
        "a lock contention error",
        r"database is locked|Lock wait timeout exceeded|LockTimeoutException|\bdeadlock\b",
        beats=("timing_issue", "io"),
    ),
    _rule(
        "race_condition",
        0.5,
        "threads in the stack",
        r"threading\.py|concurrent/futures|java\.util\.concurrent\.|ThreadPoolExecutor",
        r"System\.Threading\.Tasks",
    ),
    # environment
    _rule(
        "environment_specific",
        0.88,
        "a platform or installation difference",
        r"UnsatisfiedLinkError|cannot open shared object file|DLL load failed",
        r"Library not loaded|GLIBC_[\d.]+' not found|wrong ELF class|Exec format error",
        r"HeadlessException|cannot connect to X server|Can't open display|no \$DISPLAY",
        r"PlatformNotSupportedException",
        r"not supported on (?:this )?(?:platform|OS|Windows|macOS|Linux|darwin)",
        r"UnsupportedClassVersionError|compiled by a more recent version of the Java",
        r"command not found|executable file not found in \$PATH|spawn \S+ (?-i:\bENOENT\b)",
        r"is not recognized as an internal or external command|Executable doesn't exist at",
        r"This version of ChromeDriver only supports|cannot find (?:Chrome|Firefox) binary",
        r"No such file or directory: '(?:git|docker|node|npm|java|python3?|ffmpeg|gcc|make)'",
        r"No such file or directory: '(?:chromedriver|geckodriver)'",
        r"codec can't (?:en|de)code .*(?:charmap|cp1252|cp437|ascii)|'charmap' codec",
        r"unsupported locale setting|locale\.Error|MalformedInputException|unmappable character",
        beats=("io",),
    ),
    # A path the machine does not let the test write: a read-only mount, a shared /tmp, a
    # directory of another user.
    _rule(
        "environment_specific",
        0.85,
        "a read-only file system",
        r"Read-only file system|(?-i:\bEROFS\b)",
        beats=("io",),
    ),
    _rule(
        "environment_specific",
        0.75,
        "a path the test may not use",
        r"PermissionError|AccessDeniedException|(?-i:\bEACCES\b)|Permission denied",
        beats=("io",),
    ),
    _rule(
        "environment_specific",
        0.72,
        "a missing or mismatched dependency",
        r"ModuleNotFoundError|No module named|NoSuchMethodError|Cannot find module '[^./]",
        r"version `?GLIBCXX|requires Python",
    ),
    # order dependency
    _rule(
        "order_dependency",
        0.78,
        "mocking state left behind by an earlier test",
        r"UnfinishedStubbingException|UnfinishedVerificationException",
        r"Unfinished stubbing detected|Misplaced or misused argument matcher",
        case=True,
    ),
    _rule(
        "order_dependency",
        0.5,
        "state that already exists",
        r"already (?:exists|registered|initiali[sz]ed|defined|configured)",
        r"duplicate key|UNIQUE constraint failed|Duplicate entry|violates unique constraint",
    ),
    # resource leaks
    _rule(
        "resource_leak",
        0.9,
        "exhausted resources",
        _codes("EMFILE", "ENFILE", "ENOMEM"),
        r"Too many open files|OutOfMemoryError|^(?:E\s+)?MemoryError|Cannot allocate memory",
        r"JavaScript heap out of memory|GC overhead limit",
        r"unable to create (?:new )?native thread|LeakSanitizer|detected memory leaks",
        r"ResourceLeakDetector|found unexpected goroutines|ResourceWarning: unclosed",
        r"open handles? (?:potentially )?keeping Jest|detectOpenHandles|failed to exit gracefully",
        r"QueuePool limit of size|pool (?:is )?exhausted",
        r"Connection is not available, request timed out",
        r"Timeout waiting for (?:idle object|connection from pool)|Cannot get a connection, pool",
        r"too many clients already|Too many connections|remaining connection slots are reserved",
        r"Unable to acquire JDBC Connection|PoolTimeout",
        beats=("timing_issue", "network_dependency", "io"),
    ),
    # A file another handle still holds: most often one the tests opened and never closed.
    _rule(
        "resource_leak",
        0.75,
        "a file still held open",
        r"being used by another process|\[WinError 32\]|(?-i:\bEBUSY\b)|resource busy or locked",
        beats=("io", "environment_specific"),
    ),
    # time
    _rule(
        "time_dependency",
        0.88,
        "a calendar edge case",
        r"day is out of range for month|month must be in 1\.\.12|AmbiguousTimeError",
        r"NonExistentTimeError|nonexistent time|daylight saving|\bleap (?:year|day|second)",
        r"offset-naive and offset-aware|Invalid date 'February 29'|Feb(?:ruary)? 29",
    ),
    _rule(
        "time_dependency",
        0.66,
        "time zones",
        r"time ?zone|tzinfo|ZoneId|ZoneOffset|\bpytz\b|zoneinfo|TimeZoneInfo|UnknownTimeZoneError",
    ),
    _rule("time_dependency", 0.5, "clock code", r"freezegun|utcnow|DateTime\.Now|LocalDate\.now"),
    # randomness
    _rule(
        "randomness",
        0.9,
        "a randomly generated input",
        r"Falsifying example|hypothesis\.errors\.Flaky|@reproduce_failure|Hypothesis found",
        r"Property \S* ?(?:falsified|failed after \d+ tests?)|Counterexample|counter-example",
        r"\bShrunk\b|(?:random|rng)[ _]?seed[=:]? ?-?\d+|with seed:? -?\d+",
    ),
    _rule(
        "randomness",
        0.7,
        "generated values that collided",
        r"\bgenerated\b.{0,40}\b(?:should|must|to) be unique",
    ),
    _rule(
        "randomness",
        0.5,
        "a random number generator",
        r"/random\.py|Math\.random|java\.util\.Random|numpy\.random|\brandint\b|\bFaker\b",
        r"jqwik|quickcheck|proptest|fast-check|\bfc\.assert",
    ),
    # values compared
    _rule(
        "unordered_collection",
        0.92,
        "the same elements in another order",
        r"same elements but not in the same order|but the order was not|in a different order",
    ),
    # An exact comparison of floats is a floating-point problem; a comparison within a
    # tolerance that a valid result falls outside is a range drawn too tight.
    _rule(
        "floating_point",
        0.85,
        "a floating-point comparison",
        r"\d\.\d*(?:0{6,}[1-9]|9{6,}\d)\d{0,2}\b|FloatingPointError|Non-terminating decimal",
    ),
    _rule(
        "too_restrictive_range",
        0.82,
        "a value just outside the asserted range or tolerance",
        r"Assert\.InRange\(\) Failure|to be between:|is not between|not within range",
        r"within \S+ delta|Max difference between .* allowed is|Relative error is too high",
        r"Expected: (?:in range|between|-?[\d.]+ \+/- )",
        r"not almost equal|within \d+ places|Arrays are not almost equal|Not equal to tolerance",
        r"toBeCloseTo|Max absolute difference|(?-i:\bULPs?\b)",
    ),
    # I/O
    _rule(
        "io",
        0.85,
        "a file-system error",
        r"FileNotFoundError|NoSuchFileException|FileNotFoundException|(?-i:\bENOENT\b)",
        r"No such file or directory|DirectoryNotFoundException|FileExistsError",
        r"FileAlreadyExistsException|(?-i:\bEEXIST\b)|DirectoryNotEmptyException|(?-i:\bENOTEMPTY\b)",
        r"Directory not empty|IsADirectoryError|NotADirectoryError",
        r"disk I/O error|Input/output error|Stale file handle",
        r"UnauthorizedAccessException: Access to the path",
    ),
    _rule(
        "io",
        0.68,
        "an I/O exception",
        r"java\.io\.\w*Exception|UncheckedIOException|\bIOError\b|\bIOException\b",
        r"OSError: \[Errno|unexpected end of (?:file|stream)|\bEOFError\b",
        r"BadZipFile|Truncated file header|truncated (?:file|archive)",
    ),
    # infrastructure
    _rule(
        "infrastructure",
        0.88,
        "a CI machine or container failure",
        r"runner has received a shutdown signal|lost communication with the server",
        r"Cannot connect to the Docker daemon|Error response from daemon|toomanyrequests",
        r"pull rate limit|ImagePullBackOff|ErrImagePull|OOMKilled|exit code 137",
        r"exited with (?:error )?code 137|signal: killed|forked VM terminated without",
        r"worker '?gw\d+'? crashed|node down: Not properly terminated|replacing crashed worker",
        r"Test host process crashed|active test run was aborted|Gradle Test Executor \d+ finished",
        r"Could not find a valid Docker environment|ContainerLaunchException",
        r"Container startup failed|No space left on device|(?-i:\bENOSPC\b)",
        beats=("resource_leak", "io", "network_dependency"),
    ),
)

_QUOTE_LIMIT = 80


@dataclass(frozen=True, slots=True)
class _Hit:
    category: Category
    confidence: float
    evidence: str
    beats: frozenset[Category] = frozenset()


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 1] + "…"


def _rule_hits(text: str) -> list[_Hit]:
    hits = []
    for rule in _RULES:
        match = rule.pattern.search(text)
        if match is not None:
            evidence = f'{rule.evidence} ("{_quote(match.group(0))}")'
            hits.append(_Hit(rule.category, rule.confidence, evidence, rule.beats))
    return hits


# --- expected and actual values ----------------------------------------------------------

_PAIRS = (
    # JUnit 4/5, TestNG, AssertJ's one-line form: expected first
    re.compile(r"expected:? ?<(?P<e>.*?)>,? but was:? ?<(?P<a>.*?)>", re.S),
    re.compile(r"expected \[(?P<e>.*?)\] but found \[(?P<a>.*?)\]", re.S),
    re.compile(r"Expected:<(?P<e>.*?)>\. Actual:<(?P<a>.*?)>", re.S),
    # Jest, NUnit, xUnit, RSpec, Minitest, testify, Hamcrest: on two lines
    re.compile(
        r"^\s*[-+]?\s*Expected(?: value)?\s*:?\s*(?P<e>.+?)\s*\n\s*[-+]?\s*"
        r"(?:Received|But was|Actual|got|actual|but: was)\s*:?\s*(?P<a>.+?)\s*$",
        re.M | re.I,
    ),
    # Python: unittest "a != b" (also "Lists differ: a != b"), pytest "assert a == b"
    re.compile(
        r"^(?:E\s+)?(?:AssertionError: )?(?:\w+ differ: )?(?P<a>[^\s>].*?) != (?P<e>.+?)$", re.M
    ),
    re.compile(r"^(?:E\s+)?(?:AssertionError: )?assert (?P<a>.+?) == (?P<e>.+?)$", re.M),
    # pytest's first differing item of two sequences
    re.compile(r"At index \d+ diff: (?P<a>.+?) != (?P<e>.+?)$", re.M),
    # Go
    re.compile(r"\bgot:? (?P<a>.+?),? want:? (?P<e>.+?)$", re.M),
    re.compile(r"\bwant:? (?P<e>.+?),? got:? (?P<a>.+?)$", re.M),
    re.compile(r"\bexpect(?:ed)? to get (?P<e>.+?),? got (?P<a>.+?)$", re.M),
    # Jasmine, Chai
    re.compile(
        r"\bexpected (?P<a>.+?) to (?:equal|be|eql|deep ?equal) (?P<e>.+?)\.?$", re.M | re.I
    ),
    # Twisted trial, googletest, Node's assert
    re.compile(r"not equal:\s*a = (?P<a>.+?)\s*\bb = (?P<e>.+?)\s*$", re.S),
    re.compile(r"Which is: (?P<a>.+?)\s*\n.*\n\s*Which is: (?P<e>.+?)\s*$", re.M),
    re.compile(
        r"deep-equal:\s*(?P<a>.+?)\s*should (?:loosely |strictly )?deep-equal\s*(?P<e>.+)", re.S
    ),
)
_MATCHER_WORDS = re.compile(r"^(?:is |equal to |(?:an object that is )?deep-equals to )+")
"""Hamcrest's description of the expected value, before the value itself."""
_ROUNDED_FROM = re.compile(r"\s*\(rounded from [^)]*\)")
"""xUnit's note on a value compared at a given precision."""
_ITEM_SPLIT = re.compile(r"[,;&|\s]+")
_ITEM_STRIP = re.compile(r"[\[\](){}<>\"'`]|\.\.\.")
_FLOAT = re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?[fFdDmM]?$")
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_WEEKDAY = (
    r"(?:Mon(?:day)?|Tue(?:s(?:day)?)?|Wed(?:nesday)?|Thu(?:rs(?:day)?)?|Fri(?:day)?"
    r"|Sat(?:urday)?|Sun(?:day)?)"
)
_DATE_OR_TIME = re.compile(
    # Names as date formatters print them (capitalised, whole words): "Monitor" is no Monday.
    rf"\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}:\d{{2}}(?::\d{{2}})?|\b{_MONTH}\.? \d{{1,2}}\b"
    rf"|\b\d{{1,2}} {_MONTH}\b|\b{_WEEKDAY}\b|(?i:\b(?:today|yesterday|tomorrow)\b)"
)
_ROUNDING = 1e-9
"""Relative difference of two floats that only rounding explains."""
_EPOCH_SECONDS = (1e9, 2.2e9)
"""Unix times from 2001 to 2039: two such numbers less than a day apart are two readings of
a clock (so are two such times in milliseconds, 1,000 times these)."""
_DECIMAL_MARK = re.compile(r"(?<=\d)[.,](?=\d)")


def _pairs(text: str) -> Iterable[tuple[str, str]]:
    """Expected and actual values of failed comparisons (equal ones too: a runner that
    prints two floats alike shows that they differ beyond the digits printed)."""
    for pattern in _PAIRS:
        for match in pattern.finditer(text):
            expected = _ROUNDED_FROM.sub("", _MATCHER_WORDS.sub("", match.group("e").strip()))
            actual = _ROUNDED_FROM.sub("", match.group("a").strip())
            if expected and actual and len(expected) < 2000:
                yield expected, actual


def _items(value: str) -> list[str]:
    return [item for item in _ITEM_SPLIT.split(_ITEM_STRIP.sub(" ", value)) if item]


def _number(value: str) -> float | None:
    text = value.strip().strip("'\"<>[]")
    if not _FLOAT.match(text):
        return None
    try:
        return float(text.rstrip("fFdDmM"))
    except ValueError:
        return None


def _significant_digits(value: str) -> int:
    return len(value.strip().lstrip("+-").replace(".", "").lstrip("0").split("e")[0])


def _compare(expected: str, actual: str) -> _Hit | None:
    """What an expected/actual pair shows: the same items reordered, two floats a rounding
    error apart (or printed alike), values that differ only in a date or a time of day, or
    only in the decimal mark or the line endings the machine writes."""
    shown = f'expected "{_quote(expected)}", got "{_quote(actual)}"'
    if expected == actual:
        if "." in expected and _number(expected) is not None:
            return _Hit(
                "floating_point", 0.85, f"floats that differ beyond the digits shown ({shown})"
            )
        return None
    plain_e, plain_a = (
        expected.replace("[", "").replace("]", ""),
        actual.replace("[", "").replace("]", ""),
    )
    if _DECIMAL_MARK.sub(".", plain_e) == _DECIMAL_MARK.sub(".", plain_a):
        return _Hit("environment_specific", 0.85, f"a locale's decimal mark ({shown})")
    if _line_endings(plain_e) == _line_endings(plain_a):
        return _Hit("environment_specific", 0.85, f"the platform's line endings ({shown})")
    left, right = _items(expected), _items(actual)
    if len(left) >= 2 and left != right and Counter(left) == Counter(right):
        return _Hit("unordered_collection", 0.88, f"the same elements in another order ({shown})")
    a, b = _number(expected), _number(actual)
    if a is not None and b is not None:
        low, high = sorted((abs(a), abs(b)))
        for scale in (1.0, 1000.0):
            first, last = (bound * scale for bound in _EPOCH_SECONDS)
            if first <= low and high <= last and high - low <= 86_400 * scale:
                return _Hit("time_dependency", 0.75, f"two readings of the clock ({shown})")
        if a.is_integer() and b.is_integer() and "." not in expected + actual:
            return None
        relative = abs(a - b) / max(abs(a), abs(b))
        precise = max(_significant_digits(expected), _significant_digits(actual)) >= 7
        if relative <= _ROUNDING or (precise and relative <= 1e-6):
            return _Hit("floating_point", 0.88, f"a floating-point rounding difference ({shown})")
        return None
    dated = _DATE_OR_TIME.search(plain_e) and _DATE_OR_TIME.search(plain_a)
    if dated and _DATE_OR_TIME.sub("", plain_e) == _DATE_OR_TIME.sub("", plain_a):
        return _Hit("time_dependency", 0.8, f"values that differ only in a date or time ({shown})")
    return None


def _line_endings(value: str) -> str:
    """``value`` with Windows line endings, printed or escaped, made Unix ones."""
    return value.replace("\r\n", "\n").replace("\\r\\n", "\\n").replace("\\r", "").replace("\r", "")


_BOUND = (
    # pytest "assert 105 < 100", Python "105 not less than 100"
    re.compile(r"assert (?P<a>-?[\d.]+) (?P<op>[<>]=?) (?P<b>-?[\d.]+)\s*$", re.M),
    re.compile(
        r"(?P<a>-?[\d.]+) not (?P<op>less|greater) than (?:or equal to )?(?P<b>-?[\d.]+)", re.I
    ),
    # Jest toBeLessThan & co, NUnit, Hamcrest, AssertJ
    re.compile(
        r"Expected:\s*(?P<op>[<>]=?|(?:a value )?(?:less|greater) than(?: or equal to)?)\s*<?"
        r"(?P<b>-?[\d.]+)>?\s*\n\s*(?:Received|But was|but:)\s*:?\s*<?(?P<a>-?[\d.]+)",
        re.I,
    ),
    re.compile(
        r"Expecting actual:\s*(?P<a>-?[\d.]+)\s*to be (?P<op>less|greater) than(?: or equal to)?"
        r":?\s*(?P<b>-?[\d.]+)",
        re.I,
    ),
    # Chai
    re.compile(
        r"expected (?P<a>-?[\d.]+) to be (?P<op>below|above|less than|greater than|at most"
        r"|at least)(?: or equal to)? (?P<b>-?[\d.]+)",
        re.I,
    ),
)
_DURATION_WORDS = re.compile(r"elapsed|duration|took|latency|\bms\b|millis|seconds", re.I)
_RUNNER_TIMES = re.compile(r"Time elapsed: [\d.,]+ ?s(?:ec)?\b", re.I)
"""How long the runner says the test took (Surefire): not what the assertion is about."""


class _Bound(NamedTuple):
    """A value compared with a bound: what it points to, and whether the two differ by
    more than a rounding error (then float noise in their digits is beside the point)."""

    hit: _Hit | None
    apart: bool


def _bound(text: str) -> _Bound | None:
    """A value compared with a bound and found just past it: the range asserted is narrower
    than what the code validly produces. Past it by a rounding error, the bound was checked
    exactly on a float; far past it, the result is wrong; and a bound on elapsed time is a
    timing assumption."""
    for pattern in _BOUND:
        match = pattern.search(text)
        if match is None:
            continue
        a, b = _number(match.group("a")), _number(match.group("b"))
        if a is None or b is None:
            continue
        shown = _quote(match.group(0))
        gap = abs(a - b) / max(abs(a), abs(b)) if a != b else 0.0
        if 0 < gap <= _ROUNDING:
            return _Bound(
                _Hit(
                    "floating_point", 0.88, f'a value a rounding error past its bound ("{shown}")'
                ),
                apart=False,
            )
        around = _RUNNER_TIMES.sub("", text[max(0, match.start() - 200) : match.end() + 200])
        if _DURATION_WORDS.search(around):
            return _Bound(_Hit("timing_issue", 0.7, f'a time limit just missed ("{shown}")'), True)
        small_counts = a.is_integer() and b.is_integer() and max(abs(a), abs(b)) < 10
        if b != 0 and abs(a - b) <= 0.25 * abs(b) and not small_counts:
            hit = _Hit("too_restrictive_range", 0.82, f'a value just past its bound ("{shown}")')
            return _Bound(hit, True)
        return _Bound(None, apart=gap > 0)
    return None


def _failure_hits(failure: Failure) -> dict[Category, tuple[float, str]]:
    """Per category: how strongly this attempt's text points there, and the best evidence."""
    text = f"{failure.error_type}\n{failure.message}\n{failure.stack}"[:MAX_TEXT_CHARS]
    hits = _rule_hits(text)
    bound = _bound(f"{failure.message}\n{failure.stack}")
    if bound is not None and bound.apart:
        # Digits such as 634.4005240000001 are float noise when the values compared are
        # far apart: the rounding is not why the comparison failed.
        hits = [hit for hit in hits if hit.category != "floating_point"]
    compared = [_compare(e, a) for e, a in _pairs(f"{failure.message}\n{failure.stack}")]
    hits.extend(hit for hit in compared if hit is not None)
    if bound is not None and bound.hit is not None:
        hits.append(bound.hit)
    beaten = {c for hit in hits for c in hit.beats if hit.confidence >= 0.75}
    by_category: dict[Category, list[_Hit]] = {}
    for hit in hits:
        if hit.category not in beaten:
            by_category.setdefault(hit.category, []).append(hit)
    result: dict[Category, tuple[float, str]] = {}
    for category, found in by_category.items():
        found.sort(key=lambda hit: -hit.confidence)
        result[category] = (_support(h.confidence for h in found), found[0].evidence)
    return result


def _support(confidences: Iterable[float]) -> float:
    """The strongest hint, raised a little by each further one that agrees: independent
    hints add up, but weak ones never add up to a strong one."""
    total = 0.0
    for confidence in sorted(confidences, reverse=True):
        total = confidence if total == 0.0 else total + (1 - total) * 0.3 * confidence
    return total


@dataclass(frozen=True, slots=True)
class _Signal:
    category: Category
    confidence: float
    evidence: str


def _text_signals(failures: Sequence[Failure]) -> list[_Signal]:
    per_failure = [_failure_hits(f) for f in failures if f.message or f.stack or f.error_type]
    if not per_failure:
        return []
    signals = []
    for category in CATEGORIES:
        found = [hits[category] for hits in per_failure if category in hits]
        if not found:
            continue
        share = len(found) / len(per_failure)
        strongest, shown = max(found)
        where = (
            "the failure shows"
            if len(per_failure) == 1
            else f"{len(found)} of {len(per_failure)} failures show"
        )
        signals.append(_Signal(category, strongest * (0.7 + 0.3 * share), f"{where} {shown}"))
    signals.sort(key=lambda s: -s.confidence)
    if len(signals) >= 2:
        # Two categories in the same text: the leader is less certain the closer they are.
        leader, runner_up = signals[0], signals[1]
        penalty = 0.6 * max(0.0, runner_up.confidence - leader.confidence + 0.25)
        signals[0] = _Signal(leader.category, leader.confidence - penalty, leader.evidence)
    return signals


# --- behaviour ---------------------------------------------------------------------------


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher's exact test of the 2x2 table [[a, b], [c, d]]: the chance, with the
    margins fixed, of a top-left count of ``a`` or more. Small when the first row's share
    of the first column is larger than the second row's by more than chance explains."""
    row, col, n = a + b, a + c, a + b + c + d
    if n == 0:
        return 1.0
    low, high = max(0, row + col - n), min(row, col)
    denominator = _log_comb(n, col)
    total = sum(
        math.exp(_log_comb(row, k) + _log_comb(n - row, col - k) - denominator)
        for k in range(max(a, low), high + 1)
    )
    return min(1.0, total)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order: comparing each with the
    significance level keeps the chance of any false finding among them at that level."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 0.001 else f"{value:.1e}"


def _environment_signal(groups: Mapping[str, Mapping[str, tuple[int, int]]]) -> _Signal | None:
    """Failures concentrated on one value of a dimension: each value against the rest of its
    dimension, every value of every dimension one test of the Holm family."""
    tests: list[tuple[str, str, int, int, int, int]] = []
    for dimension, values in sorted(groups.items()):
        if len(values) < 2:
            continue
        failed_total = sum(failed for failed, _ in values.values())
        runs_total = sum(runs for _, runs in values.values())
        for value, (failed, runs) in sorted(values.items()):
            failed, runs = min(failed, runs), max(runs, 0)
            rest_failed, rest_runs = failed_total - failed, runs_total - runs
            tests.append((dimension, value, failed, runs, rest_failed, rest_runs))
    if not tests:
        return None
    p_values = [fisher_greater(f, r - f, rf, rr - rf) for _, _, f, r, rf, rr in tests]
    adjusted = holm(p_values)
    best = min(range(len(tests)), key=lambda i: (adjusted[i], p_values[i]))
    if adjusted[best] >= SIGNIFICANCE:
        return None
    dimension, value, failed, runs, rest_failed, rest_runs = tests[best]
    confidence = 0.75 + (0.07 if adjusted[best] < 0.01 else 0.0)
    confidence += 0.08 if rest_runs and rest_failed / rest_runs <= 0.02 else 0.0
    return _Signal(
        "environment_specific",
        confidence,
        f"it failed in {failed} of {runs} runs on {dimension} {value} against {rest_failed}"
        f" of {rest_runs} elsewhere (Fisher p={_p(adjusted[best])}, Holm-corrected over"
        f" {len(tests)} values)",
    )


def _order_signal(evidence: Evidence) -> _Signal | None:
    """A test that fails exactly when another test ran before it in the same worker (it is
    polluted), or exactly when that test did not (it relies on the state it leaves)."""
    failing: dict[str, tuple[str, ...]] = {}
    for index, failure in enumerate(evidence.failures):
        failing.setdefault(failure.run_id or f"#{index}", failure.preceding)
    passing = list(evidence.preceding_when_passed)
    if not passing or len(failing) < 2 or not any(failing.values()):
        return None
    failed_sets = [set(tests) for tests in failing.values()]
    passed_sets = [set(tests) for tests in passing]
    candidates = sorted(set().union(*failed_sets, *passed_sets))
    tests: list[tuple[str, bool, int, int, int, int]] = []
    for name in candidates:
        a = sum(name in s for s in failed_sets)
        b = sum(name in s for s in passed_sets)
        c, d = len(failed_sets) - a, len(passed_sets) - b
        tests.append((name, True, a, b, c, d))  # fails after it
        tests.append((name, False, c, d, a, b))  # fails without it
    p_values = [fisher_greater(a, b, c, d) for _, _, a, b, c, d in tests]
    adjusted = holm(p_values)

    def closeness(i: int) -> float:
        # Ties (tests that always run together) go to the one that ran closest before.
        name = tests[i][0]
        gaps = [len(run) - run.index(name) for run in failing.values() if name in run]
        return median(gaps) if gaps else math.inf

    best = min(range(len(tests)), key=lambda i: (adjusted[i], p_values[i], closeness(i)))
    if adjusted[best] >= SIGNIFICANCE:
        return None
    name, after, a, b, c, d = tests[best]
    confidence = 0.78 + (0.07 if adjusted[best] < 0.01 else 0.0) + (0.05 if b == c == 0 else 0)
    condition = "ran before it" if after else "did not run before it"
    return _Signal(
        "order_dependency",
        confidence,
        f"it failed in {a} of {a + b} runs where {name} {condition} in the same worker and in"
        f" {c} of {c + d} others (Fisher p={_p(adjusted[best])}, Holm-corrected over"
        f" {len(tests)} tests)",
    )


def _timeout_signal(evidence: Evidence) -> _Signal | None:
    """Failing attempts that ran into the timeout, or (without one) took far longer than
    passing runs do."""
    durations = [f.duration_ms for f in evidence.failures if f.duration_ms is not None]
    if not durations:
        return None
    timeout = evidence.timeout_ms
    if timeout:
        near = sum(d >= NEAR_TIMEOUT * timeout for d in durations)
        if near == 0 or near / len(durations) < 0.5:
            return None
        share = near / len(durations)
        return _Signal(
            "timing_issue",
            0.72 + 0.16 * share,
            f"{near} of {len(durations)} failing attempts ran to at least"
            f" {NEAR_TIMEOUT:.0%} of the {timeout:g} ms timeout",
        )
    passing = sorted(evidence.passing_durations_ms)
    if len(durations) < 2 or len(passing) < 3:
        return None
    typical = median(passing)
    if typical > 0 and min(durations) > 3 * typical and min(durations) > passing[-1]:
        return _Signal(
            "timing_issue",
            0.55,
            f"failing attempts took at least {min(durations) / typical:.0f} times the"
            f" {typical:g} ms a passing run takes",
        )
    return None


def _cluster(evidence: Evidence) -> tuple[str, ...]:
    runs = evidence.failed_runs or len({f.run_id for f in evidence.failures if f.run_id})
    if runs < 2:
        return ()
    needed = max(2, math.ceil(CLUSTER_SHARE * runs))
    return tuple(name for name, both in evidence.co_failing if both >= needed)


_INTERMITTENT: frozenset[Category] = frozenset(
    ("timing_issue", "network_dependency", "race_condition", "async_wait", "randomness")
)


def _regression(outcomes: Sequence[str]) -> int:
    """Failing runs at the end of a history that passed before them (0 when it did not),
    the shape of a regression rather than of flakiness."""
    streak = 0
    for outcome in reversed(outcomes):
        if outcome != "failed":
            break
        streak += 1
    passed_before = any(o in ("passed", "flaky") for o in outcomes[: len(outcomes) - streak])
    return streak if streak >= 3 and passed_before else 0


# --- the verdict -------------------------------------------------------------------------

_PHRASES: dict[Category, str] = {
    "timing_issue": "a timing issue",
    "network_dependency": "a network dependency",
    "race_condition": "a race condition",
    "environment_specific": "an environment-specific failure",
    "order_dependency": "an order dependency between tests",
    "resource_leak": "a resource leak",
    "time_dependency": "a dependency on the date, time or time zone",
    "randomness": "randomness in the test's input",
    "unordered_collection": "an assumed order of an unordered collection",
    "floating_point": "floating-point precision",
    "io": "file-system I/O",
    "async_wait": "an asynchronous result not waited for",
    "too_restrictive_range": "an asserted range narrower than the valid results",
    "infrastructure": "the CI infrastructure",
    "unknown": "an unknown cause",
}


def _combine(signals: Sequence[_Signal]) -> dict[Category, tuple[float, list[str]]]:
    by_category: dict[Category, list[_Signal]] = {}
    for signal in signals:
        by_category.setdefault(signal.category, []).append(signal)
    combined = {}
    for category, found in by_category.items():
        found.sort(key=lambda s: -s.confidence)
        combined[category] = (
            _support(s.confidence for s in found),
            [s.evidence for s in found],
        )
    return combined


def classify(evidence: Evidence, threshold: float = CONFIDENCE_THRESHOLD) -> Verdict:
    """The most likely root cause of a test's failures, or ``unknown`` when no category
    reaches ``threshold``.

    Text rules and behavioural signals each give a category and a confidence; agreeing
    signals strengthen each other, and a significant behavioural finding (an environment,
    an order, the timeout) outranks a text hint of the same strength because it was
    measured rather than read. A cluster of co-failing tests is reported with the verdict;
    without a specific shared cause a large one is blamed on the infrastructure. A test
    whose latest runs all fail after passing looks like a regression, so categories that
    only explain intermittent failures lose confidence."""
    text = _text_signals(evidence.failures)
    behaviour = [
        signal
        for signal in (
            _environment_signal(evidence.groups),
            _order_signal(evidence),
            _timeout_signal(evidence),
        )
        if signal is not None
    ]
    cluster = _cluster(evidence)
    combined = _combine([*text, *behaviour])
    measured = {s.category for s in behaviour}

    def rank(category: Category) -> tuple[float, bool]:
        return combined[category][0], category in measured

    ranked = sorted(combined, key=rank, reverse=True)
    notes: list[str] = []
    if ranked:
        category = ranked[0]
        confidence, reasons = combined[category]
    else:
        category, confidence, reasons = "unknown", 0.0, []

    if cluster and len(cluster) >= CLUSTER_INFRASTRUCTURE and confidence < threshold:
        category = "infrastructure"
        confidence = min(0.9, 0.66 + 0.04 * len(cluster))
        reasons = [f"{len(cluster)} other tests failed in the same runs"]
    elif cluster:
        notes.append(f"{len(cluster)} other test(s) failed in the same runs")

    streak = _regression(evidence.outcomes)
    if streak and category in _INTERMITTENT:
        confidence -= 0.15
        notes.append(f"the last {streak} runs all failed, more like a regression")
    elif category in _INTERMITTENT and "flaky" in evidence.outcomes:
        confidence = min(0.95, confidence + 0.03)

    confidence = round(max(0.0, min(1.0, confidence)), 2)
    evidence_text = "; ".join([*reasons, *notes])
    if category == "unknown" or confidence < threshold:
        if category == "unknown":
            explanation = "No failure text or behaviour points to a specific cause."
        else:
            explanation = (
                f"No cause is certain enough: the strongest hint, {_PHRASES[category]}"
                f" ({evidence_text}), has confidence {confidence:.2f}, below {threshold:.2f}."
            )
        return Verdict("unknown", confidence, explanation, cluster)
    return Verdict(
        category,
        confidence,
        f"Likely {_PHRASES[category]}: {evidence_text}.",
        cluster,
    )
