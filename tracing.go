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

// newTracer is the App's tracer, made once: the global provider's tracer
// delegates to an SDK installed later.
func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(tracerName)
}

// poolName names the App's pool in spans: its Instance, else "default".
func (a *App) poolName() string {
	if a.cfg.Instance != "" {
		return a.cfg.Instance
	}
	return "default"
}

// callSpan is the client span of one call.
type callSpan struct {
	span trace.Span
	wait time.Duration
}

func (a *App) startSpan(ctx context.Context, name, tool string) (context.Context, *callSpan) {
	ctx, span := a.tr.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attrTool.String(tool), attrPool.String(a.poolName())))
	return ctx, &callSpan{span: span}
}

// observe makes the pool report each attempt to the span; nothing when
// the span records nothing.
func (s *callSpan) observe(co *pool.CallOptions, requestID string) {
	if !s.span.IsRecording() {
		return
	}
	s.span.SetAttributes(attrRequestID.String(requestID))
	co.Observer = s
}

// Attempt records one attempt: the last one's worker and number, the
// queue wait summed, and an event per attempt.
func (s *callSpan) Attempt(at pool.Attempt) {
	s.wait += at.QueueWait
	s.span.SetAttributes(attrWorker.String(at.Worker), attrAttempt.Int(at.Number), attrQueueWait.Float64(s.wait.Seconds()))
	s.span.AddEvent("attempt", trace.WithAttributes(attrWorker.String(at.Worker), attrAttempt.Int(at.Number),
		attrQueueWait.Float64(at.QueueWait.Seconds())))
}

// end records the call's outcome; an error sets the span's status.
func (s *callSpan) end(err error) {
	if s.span.IsRecording() {
		s.span.SetAttributes(attrOutcome.String(string(OutcomeOf(err))))
		if err != nil {
			s.span.RecordError(err)
			s.span.SetStatus(codes.Error, err.Error())
		}
	}
	s.span.End()
}
