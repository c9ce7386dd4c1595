package grpcworker

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/internal/auth"
)

// The worker's stderr is turned into log records that keep Python's
// meaning (snakepit_bridge/_logging.py writes the format):
//
//	LEVEL [worker=W pid=P request_id=R trace_id=T span_id=S] logger: message
//	| continuation (a multi-line message, a traceback)
//
// A prefixed line starts a record at Python's level; "| " lines continue
// it. Lines without the prefix come from elsewhere (print, Python's own
// report of an uncaught exception, C extensions): "Traceback (most recent
// call last):" starts an ERROR record that takes every following
// unprefixed line (the frames, the exception line); a "file:line:
// SomeWarning:" line a WARN record that takes its indented lines; a
// "snakepit: " line (the worker's own fatal message) an ERROR record that
// takes its indented lines and a traceback; any other line is an INFO
// record of its own. worker= and pid= are dropped: the
// logger already carries worker_id and pid.
const (
	// stderrQuiet: a record still open this long after its last line is
	// emitted, so a traceback's last line does not wait for the next
	// record.
	stderrQuiet = 100 * time.Millisecond
	// maxRecordBytes bounds one record's message; the lines beyond go to
	// a further record (attribute "continued") so nothing is lost.
	maxRecordBytes = 64 << 10
	// LevelCritical is the slog level of Python's CRITICAL records.
	LevelCritical = slog.LevelError + 4
	continuation  = "| "
	// fatalPrefix starts what the worker writes when it cannot go on
	// (server.py's _fail: an adapter that does not load, a failed setup),
	// with indented hint lines and possibly a traceback.
	fatalPrefix = "snakepit: "
)

var (
	pyRecordLine = regexp.MustCompile(`^(DEBUG|INFO|WARNING|ERROR|CRITICAL) \[([^\]]*)\] ([^ :]*): (.*)$`)
	pyWarning    = regexp.MustCompile(`^\S.*:\d+: \w*Warning: `)
)

var pyLevels = map[string]slog.Level{
	"DEBUG": slog.LevelDebug, "INFO": slog.LevelInfo, "WARNING": slog.LevelWarn,
	"ERROR": slog.LevelError, "CRITICAL": LevelCritical,
}

type recordKind int

const (
	kindPython    recordKind = iota // a prefixed record: takes "| " lines
	kindTraceback                   // an uncaught exception's report: takes unprefixed lines
	kindRaw                         // anything else: takes indented lines
)

type pendingRecord struct {
	kind  recordKind
	at    time.Time
	level slog.Level
	msg   strings.Builder
	attrs []slog.Attr
	// fatal: a raw record of the worker's own last words (fatalPrefix).
	fatal bool
	// excLine: a traceback record has had its exception line (the first
	// unindented line after the frames); from then on only a chained
	// exception continues it.
	excLine bool
}

// Lines that chain one exception's report to the next.
var chainLines = map[string]bool{
	"":                                   true,
	"Traceback (most recent call last):": true,
	"During handling of the above exception, another exception occurred:":  true,
	"The above exception was the direct cause of the following exception:": true,
}

// takes says whether a traceback record continues with line, and notes
// its exception line.
func (r *pendingRecord) takes(line string) bool {
	switch {
	case strings.HasPrefix(line, continuation) || pyWarning.MatchString(line):
		return false
	case chainLines[line]:
		r.excLine = false
		return true
	case strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t"):
		return !r.excLine
	case r.excLine:
		return false
	}
	r.excLine = true
	return true
}

// stderrLog is the childproc.LineSink of a Python worker's stderr.
type stderrLog struct {
	log     *slog.Logger
	secrets []string // replaced by auth.Redacted in every line

	mu     sync.Mutex
	cur    *pendingRecord
	timer  *time.Timer
	closed bool
}

func newStderrLog(log *slog.Logger, secrets ...string) *stderrLog {
	s := &stderrLog{log: log}
	for _, v := range secrets {
		if v != "" {
			s.secrets = append(s.secrets, v)
		}
	}
	return s
}

var _ childproc.LineSink = (*stderrLog)(nil)

// Line takes one stderr line.
func (s *stderrLog) Line(line string) {
	line = auth.RedactIn(line, s.secrets...)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.emit(&pendingRecord{kind: kindRaw, at: now, level: slog.LevelInfo}, line)
		return
	}
	switch {
	case pyRecordLine.MatchString(line):
		s.start(parseRecordLine(line, now))
		return
	case s.cur != nil && s.cur.kind == kindPython && strings.HasPrefix(line, continuation):
		s.add(line[len(continuation):])
	case s.cur != nil && s.cur.kind == kindTraceback && s.cur.takes(line):
		s.add(line)
	case s.cur != nil && s.cur.kind == kindRaw && (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")):
		s.add(line)
	case s.cur != nil && s.cur.kind == kindRaw && s.cur.fatal && line == "Traceback (most recent call last):":
		s.cur.kind = kindTraceback // the fatal message's traceback
		s.add(line)
	default:
		r := &pendingRecord{kind: kindRaw, at: now, level: slog.LevelInfo}
		switch {
		case line == "Traceback (most recent call last):":
			r.kind, r.level = kindTraceback, slog.LevelError
		case strings.HasPrefix(line, fatalPrefix):
			r.level, r.fatal = slog.LevelError, true
		case pyWarning.MatchString(line):
			r.level = slog.LevelWarn
		}
		r.msg.WriteString(strings.TrimPrefix(line, continuation))
		s.start(r)
		return
	}
	s.arm()
}

// Close emits what is pending; later lines (none are expected) are
// emitted one by one.
func (s *stderrLog) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.flush()
}

func (s *stderrLog) start(r *pendingRecord) {
	s.flush()
	s.cur = r
	s.arm()
}

// add appends a continuation line, moving to a further record at the
// size bound.
func (s *stderrLog) add(line string) {
	if s.cur.msg.Len()+1+len(line) > maxRecordBytes {
		prev := s.cur
		s.flushWith(slog.Bool("continued", true))
		next := &pendingRecord{kind: prev.kind, at: time.Now(), level: prev.level, attrs: prev.attrs}
		next.msg.WriteString(line)
		s.cur = next
		return
	}
	s.cur.msg.WriteByte('\n')
	s.cur.msg.WriteString(line)
}

func (s *stderrLog) arm() {
	if s.timer == nil {
		s.timer = time.AfterFunc(stderrQuiet, s.quiet)
		return
	}
	s.timer.Reset(stderrQuiet)
}

func (s *stderrLog) quiet() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flush()
}

func (s *stderrLog) flush() { s.flushWith() }

func (s *stderrLog) flushWith(extra ...slog.Attr) {
	if s.cur == nil {
		return
	}
	r := s.cur
	s.cur = nil
	r.attrs = append(r.attrs[:len(r.attrs):len(r.attrs)], extra...)
	s.emit(r, r.msg.String())
}

func (s *stderrLog) emit(r *pendingRecord, msg string) {
	ctx := context.Background()
	if !s.log.Enabled(ctx, r.level) {
		return
	}
	rec := slog.NewRecord(r.at, r.level, msg, 0)
	rec.AddAttrs(r.attrs...)
	rec.AddAttrs(slog.String("stream", "stderr"))
	_ = s.log.Handler().Handle(ctx, rec)
}

// parseRecordLine reads a prefixed line (pyRecordLine matched).
func parseRecordLine(line string, at time.Time) *pendingRecord {
	m := pyRecordLine.FindStringSubmatch(line)
	r := &pendingRecord{kind: kindPython, at: at, level: pyLevels[m[1]]}
	for _, kv := range strings.Fields(m[2]) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" || k == "worker" || k == "pid" {
			continue
		}
		r.attrs = append(r.attrs, slog.String(k, v))
	}
	r.attrs = append(r.attrs, slog.String("logger", m[3]))
	r.msg.WriteString(m[4])
	return r
}

// envLogLevel is the worker's logging level (snakepit_bridge/_logging.py).
const envLogLevel = "SNAKEPIT_LOG_LEVEL"

// pythonLevel is the most verbose Python level log keeps.
func pythonLevel(log *slog.Logger) string {
	ctx := context.Background()
	for _, l := range []struct {
		name  string
		level slog.Level
	}{{"DEBUG", slog.LevelDebug}, {"INFO", slog.LevelInfo}, {"WARNING", slog.LevelWarn}, {"ERROR", slog.LevelError}} {
		if log.Enabled(ctx, l.level) {
			return l.name
		}
	}
	return "CRITICAL"
}
