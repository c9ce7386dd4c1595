package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit"
)

// poolsFlags add named pools (snakepit.Config.Pools) to the default one
// the other flags describe: from a JSON file (--pools, docs/POOLS.md) and
// from repeated --pool flags, in that order.
type poolsFlags struct {
	file  string
	specs []snakepit.PoolConfig
}

func (p *poolsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.file, "pools", "", "JSON `FILE` of named pools beside the default one (format: docs/POOLS.md)")
	fs.Func("pool", "add a named pool: `NAME,adapter=CLASS,workers=N,capacity=C,python=PATH,pythonpath=A:B` (elastic: min_workers=N,max_workers=M,idle_timeout=60s instead of workers; snakepit run: agents=HOST:PORT, repeatable, or agents=dns:NAME:PORT feeds it from those agents' pool NAME) (keys optional; unset ones come from the top-level flags); repeatable", func(s string) error {
		pc, err := parsePoolFlag(s)
		if err != nil {
			return err
		}
		p.specs = append(p.specs, pc)
		return nil
	})
}

// apply adds the pools to cfg.
func (p *poolsFlags) apply(cfg *snakepit.Config) error {
	if p.file != "" {
		data, err := os.ReadFile(p.file)
		if err != nil {
			return fmt.Errorf("--pools: %w", err)
		}
		pools, err := parsePoolFile(data)
		if err != nil {
			return fmt.Errorf("--pools %s: %w", p.file, err)
		}
		cfg.Pools = append(cfg.Pools, pools...)
	}
	cfg.Pools = append(cfg.Pools, p.specs...)
	return nil
}

const poolFlagKeys = "adapter, workers, min_workers, max_workers, idle_timeout, capacity, python, pythonpath, agents"

// parsePoolFlag reads "NAME,key=value,...".
func parsePoolFlag(s string) (snakepit.PoolConfig, error) {
	name, rest, _ := strings.Cut(s, ",")
	pc := snakepit.PoolConfig{Name: name}
	for kv := range strings.SplitSeq(rest, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return pc, fmt.Errorf("%q is not key=value (keys: %s)", kv, poolFlagKeys)
		}
		var err error
		switch k {
		case "adapter":
			pc.Adapter = v
		case "python":
			pc.Python = v
		case "pythonpath":
			pc.PythonPath = strings.Split(v, ":")
		case "workers":
			pc.Workers, err = strconv.Atoi(v)
		case "min_workers":
			pc.MinWorkers, err = strconv.Atoi(v)
		case "max_workers":
			pc.MaxWorkers, err = strconv.Atoi(v)
		case "idle_timeout":
			pc.IdleTimeout, err = time.ParseDuration(v)
		case "capacity":
			pc.Capacity, err = strconv.Atoi(v)
		case "agents":
			err = addAgents(&pc, v)
		default:
			return pc, fmt.Errorf("unknown key %q (keys: %s; use --pools FILE for the others)", k, poolFlagKeys)
		}
		if err != nil {
			return pc, fmt.Errorf("%s: %w", k, err)
		}
	}
	return pc, nil
}

// parsePoolFile reads {"pools": [{...}, ...]}: each object's keys are
// PoolConfig field names (matched as encoding/json does, so "Workers" or
// "workers", and also in snake case: "minWorkers" or "min_workers"), durations are Go duration strings ("5s", "1m30s"), unknown
// keys are errors. Reflection finds the duration fields, so a field added
// to PoolConfig is readable here without a change.
func parsePoolFile(data []byte) ([]snakepit.PoolConfig, error) {
	var file struct {
		Pools []map[string]json.RawMessage `json:"pools"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("want {\"pools\": [...]}: %w", err)
	}
	out := make([]snakepit.PoolConfig, 0, len(file.Pools))
	for i, obj := range file.Pools {
		pc, err := decodePool(obj)
		if err != nil {
			return nil, fmt.Errorf("pools[%d]: %w", i, err)
		}
		out = append(out, pc)
	}
	return out, nil
}

var durationType = reflect.TypeFor[time.Duration]()

func decodePool(obj map[string]json.RawMessage) (snakepit.PoolConfig, error) {
	var pc snakepit.PoolConfig
	typ := reflect.TypeFor[snakepit.PoolConfig]()
	for key, raw := range obj {
		if strings.EqualFold(key, "agents") {
			// Discovery, as the agents= key of --pool: a string or a list.
			if err := decodeAgents(&pc, raw); err != nil {
				return pc, err
			}
			continue
		}
		// Field names have no '_': dropping it accepts snake case too.
		bare := strings.ReplaceAll(key, "_", "")
		f, ok := typ.FieldByNameFunc(func(n string) bool { return strings.EqualFold(n, bare) })
		if !ok {
			return pc, fmt.Errorf("unknown key %q (keys are the fields of snakepit.PoolConfig)", key)
		}
		if f.Type.Kind() == reflect.Interface {
			return pc, fmt.Errorf("%s cannot be set from a file", f.Name)
		}
		if f.Type == durationType {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return pc, fmt.Errorf("%s: want a duration string such as \"5s\"", f.Name)
			}
			d, err := time.ParseDuration(s)
			if err != nil {
				return pc, fmt.Errorf("%s: %w", f.Name, err)
			}
			raw = json.RawMessage(strconv.FormatInt(int64(d), 10))
		}
		if err := json.Unmarshal(raw, reflect.ValueOf(&pc).Elem().FieldByIndex(f.Index).Addr().Interface()); err != nil {
			return pc, fmt.Errorf("%s: %w", f.Name, err)
		}
	}
	if pc.Name == "" {
		return pc, errors.New("every pool needs a \"name\"")
	}
	return pc, nil
}

// decodeAgents reads a pool file's "agents": "HOST:PORT", "dns:NAME:PORT"
// or a list of them.
func decodeAgents(pc *snakepit.PoolConfig, raw json.RawMessage) error {
	var list []string
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		list = []string{one}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return errors.New("agents: want \"HOST:PORT\", \"dns:NAME:PORT\" or a list of them")
	}
	for _, v := range list {
		if err := addAgents(pc, v); err != nil {
			return fmt.Errorf("agents: %w", err)
		}
	}
	return nil
}

// elasticFlags make the default pool elastic (Config.MinWorkers,
// MaxWorkers): `snakepit run` only, as an agent keeps a fixed size.
type elasticFlags struct{ min, max int }

func (e *elasticFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&e.min, "min-workers", 0, "with --max-workers: the elastic default pool's lower bound (0: no process until a call comes)")
	fs.IntVar(&e.max, "max-workers", 0, "make the default pool elastic: it grows up to `N` workers on queue wait and removes idle ones (docs/SCALING.md); leave --workers unset")
}

// apply sets the bounds when either flag is set; --workers keeps its
// default of a fixed pool otherwise. Set explicitly as well, --workers is
// New's error, which says to leave it unset.
func (e *elasticFlags) apply(fs *flag.FlagSet, cfg *snakepit.Config) {
	if !flagSet(fs, "min-workers") && !flagSet(fs, "max-workers") {
		return
	}
	if !flagSet(fs, "workers") {
		cfg.Workers = 0
	}
	cfg.MinWorkers, cfg.MaxWorkers = e.min, e.max
}

// sizeText is the default pool's size for the ready line: N, or MIN..MAX.
func sizeText(cfg *snakepit.Config) string {
	if cfg.MaxWorkers > 0 {
		return fmt.Sprintf("%d..%d", cfg.MinWorkers, cfg.MaxWorkers)
	}
	return strconv.Itoa(cfg.Workers)
}
