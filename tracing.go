package snakepit

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/snakepit-go/snakepit/pool"
)

// Every Execute and ExecuteStream is one client span, through the
// OpenTelemetry API only: the application brings the SDK (or none, and
// the span records nothing). The span is the parent of what Python does:
// the call's traceparent is taken from the span's context.
const (
	tracerName        = "github.com/snakepit-go/snakepit"
	spanExecute       = "snakepit.Execute"
	spanExecuteStream = "snakepit.ExecuteStream"
)

// The span's attributes.
const (
	attrTool      = attribute.Key("snakepit.tool")
	attrPool      = attribute.Key("snakepit.pool")
	attrWorker    = attribute.Key("snakepit.worker")
	attrAttempt   = attribute.Key("snakepit.attempt")    // of the last attempt; 0 is the first
	attrQueueWait = attribute.Key("snakepit.queue_wait") // seconds, summed over attempts
	attrOutcome   = attribute.Key("snakepit.outcome")    // OutcomeOf the call's error
	attrRequestID = attribute.Key("snakepit.request_id")
)

// defaultProvider is the global provider as the otel package starts out:
// while it is still the global one, no SDK is installed and no span would
// record, so calls skip tracing altogether (no allocation per call).
var defaultProvider = otel.GetTracerProvider()

// globalTracer is a tracer of the global provider it came from.
type globalTracer struct {
	tp trace.TracerProvider
	tr trace.Tracer
}

// providerTracer is tp's tracer; nil for nil.
func providerTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracerName)
}

// tracer is the tracer for this call's span, or nil when nothing would
// record: Config.TracerProvider's, else the global provider's as it is
// now (SetTracerProvider after New counts).
func (a *App) tracer() trace.Tracer {
	if a.cfg.TracerProvider != nil {
		return a.tr
	}
	tp := otel.GetTracerProvider()
	if tp == defaultProvider {
		return nil
	}
	if g := a.globalTr.Load(); g != nil && g.tp == tp {
		return g.tr
	}
	g := &globalTracer{tp: tp, tr: tp.Tracer(tracerName)}
	a.globalTr.Store(g)
	return g.tr
}

// startOptions are the same for every span: made once, so a call that
// records nothing allocates nothing for them.
var startOptions = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// callSpan is the client span of one call; span is nil when the call is
// not traced.
type callSpan struct{ span trace.Span }

func (a *App) startSpan(ctx context.Context, name, tool, poolName string) (context.Context, callSpan) {
	tr := a.tracer()
	if tr == nil {
		return ctx, callSpan{}
	}
	ctx, span := tr.Start(ctx, name, startOptions...)
	if span.IsRecording() {
		span.SetAttributes(attrTool.String(tool), attrPool.String(poolName))
	}
	return ctx, callSpan{span: span}
}

// observe makes the pool report each attempt to the span; nothing when
// the span records nothing.
func (s callSpan) observe(co *pool.CallOptions, requestID string) {
	if s.span == nil || !s.span.IsRecording() {
		return
	}
	s.span.SetAttributes(attrRequestID.String(requestID))
	co.Observer = &attempts{span: s.span}
}

// attempts records a call's attempts on its span.
type attempts struct {
	span trace.Span
	wait time.Duration
}

// Attempt records one attempt: the last one's worker and number, the
// queue wait summed, and an event per attempt.
func (o *attempts) Attempt(at pool.Attempt) {
	o.wait += at.QueueWait
	o.span.SetAttributes(attrWorker.String(at.Worker), attrAttempt.Int(at.Number), attrQueueWait.Float64(o.wait.Seconds()))
	o.span.AddEvent("attempt", trace.WithAttributes(attrWorker.String(at.Worker), attrAttempt.Int(at.Number),
		attrQueueWait.Float64(at.QueueWait.Seconds())))
}

// end records the call's outcome; an error sets the span's status.
func (s callSpan) end(err error) {
	if s.span == nil {
		return
	}
	if s.span.IsRecording() {
		s.span.SetAttributes(attrOutcome.String(string(OutcomeOf(err))))
		if err != nil {
			s.span.RecordError(err)
			s.span.SetStatus(codes.Error, err.Error())
		}
	}
	s.span.End()
}
