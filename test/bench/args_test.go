package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/snakepit-go/snakepit/bridge/pb"
)

// BenchmarkArgs is issue 21's one-pass-arguments measure: a pre-encoded
// JSON argument of 100 KiB or 4 MiB ({"a":1,"b":2,"pad":"xxx…"}) sent by a
// raw grpc-go client to the minimal servicer (which sends the bytes without
// looking at them) against App.Execute with the same json.RawMessage (which
// validates it once, before dispatch), N = 1 worker. Run its rounds
// interleaved and compare go-cpu-µs/call and calls/s per round:
//
//	go test -c -o /tmp/bench.test . && for i in 1 2 3 4 5; do /tmp/bench.test -test.run '^$' -test.bench Args -test.benchtime 2s; done
func BenchmarkArgs(b *testing.B) {
	for _, size := range []int{100 << 10, 4 << 20} {
		raw := json.RawMessage(`{"a":1,"b":2,"pad":"` + strings.Repeat("x", size) + `"}`)
		kib := strconv.Itoa(size>>10) + "KiB"
		setups := []setup{
			{"raw/" + kib, 1, []int{1, 4}, func(tb testing.TB) target {
				return &argsRaw{rawTarget: newRaw(tb, 1, 8, startServicer).(*rawTarget), args: raw}
			}},
			{"snakepit/" + kib, 1, []int{1, 4}, func(tb testing.TB) target {
				t := newSnakepit(tb, 1, 0, "ArgsBenchAdapter", "add").(*snakepitTarget)
				return &argsSnakepit{snakepitTarget: t, args: raw}
			}},
		}
		for _, s := range setups {
			b.Run(s.name, func(b *testing.B) {
				t := s.start(b)
				defer t.close()
				drive(b, t, 4, 20)
				for _, c := range s.cs {
					b.Run(fmt.Sprintf("C=%d", c), func(b *testing.B) { measure(b, t, c) })
				}
			})
		}
	}
}

type argsRaw struct {
	*rawTarget
	args []byte
}

func (t *argsRaw) call(ctx context.Context) error {
	c := t.clients[t.next.Add(1)%uint64(len(t.clients))]
	resp, err := c.ExecuteTool(ctx, &pb.ExecuteToolRequest{ToolName: "add", ArgsJson: t.args})
	if err != nil {
		return err
	}
	var v int
	if err := json.Unmarshal(resp.GetResult().GetJson(), &v); err != nil {
		return err
	}
	if v != 3 {
		return fmt.Errorf("add returned %d", v)
	}
	return nil
}

type argsSnakepit struct {
	*snakepitTarget
	args json.RawMessage
}

func (t *argsSnakepit) call(ctx context.Context) error {
	res, err := t.app.Execute(ctx, t.tool, t.args)
	if err != nil {
		return err
	}
	var v int
	if err := res.Decode(&v); err != nil {
		return err
	}
	if v != 3 {
		return fmt.Errorf("add returned %d", v)
	}
	return nil
}
