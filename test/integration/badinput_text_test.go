package integration

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snakepit-go/snakepit"
)

// surrogateAdapter's tools put lone surrogates (what os.fsdecode makes of a
// file name that is not UTF-8) into an exception's message, a result and a
// streamed item: text UTF-8 cannot hold, which the host must still receive.
const surrogateAdapter = `
from snakepit_bridge import BaseAdapter, tool

BAD = "file /tmp/\udcff\udcfe"


class Adapter(BaseAdapter):
    @tool
    def raises(self) -> int:
        raise FileNotFoundError(BAD)

    @tool
    def returns(self) -> dict:
        return {"name": BAD}

    @tool
    def streams(self):
        yield BAD
        raise ValueError(BAD)
`

// TestLoneSurrogatesReachTheHost: the worker's hand-coded messages send
// such text escaped (string fields as "\udcff", JSON as its \u escape), so
// Go's proto decoder — which refuses a string that is not UTF-8 — takes the
// reply, and the caller sees the tool's own error or result rather than a
// broken call.
func TestLoneSurrogatesReachTheHost(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "surrogates_adapter.py"), []byte(surrogateAdapter), 0o644); err != nil {
		t.Fatal(err)
	}
	app := newApp(t, snakepit.Config{Workers: 1, Adapter: "surrogates_adapter.Adapter", PythonPath: []string{dir}})
	ctx := ctxT(t)

	_, err := app.Execute(ctx, "raises", nil)
	var te *snakepit.ToolError
	if !errors.As(err, &te) || te.Type != "FileNotFoundError" || !strings.Contains(te.Message, `/tmp/\udcff\udcfe`) {
		t.Fatalf("raises: want the tool's FileNotFoundError with its message escaped, got %v", err)
	}

	res, err := app.Execute(ctx, "returns", nil)
	if err != nil {
		t.Fatalf("returns: %v", err)
	}
	var got map[string]string
	if err := json.Unmarshal(res.JSON, &got); err != nil || !strings.HasPrefix(got["name"], "file /tmp/") {
		t.Fatalf("returns: want JSON with the name, got %s (%v)", res.JSON, err)
	}

	var items []string
	var streamErr error
	for c, err := range app.ExecuteStream(ctx, "streams", nil) {
		if err != nil {
			streamErr = err
			break
		}
		items = append(items, string(c.JSON))
	}
	if len(items) != 1 || !errors.As(streamErr, &te) || te.Type != "ValueError" || !strings.Contains(te.Message, `\udcff`) {
		t.Fatalf("streams: want one item then the tool's ValueError, got %q then %v", items, streamErr)
	}
	// The worker answered every call itself: nothing was a transport failure.
	if st := app.Stats().Pool; st.Restarts != 0 {
		t.Fatalf("the worker restarted %d time(s)", st.Restarts)
	}
}
