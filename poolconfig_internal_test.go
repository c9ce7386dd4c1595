package snakepit

import (
	"reflect"
	"testing"

	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// Every PoolConfig field but Name is a top-level Config field of the same
// name and type, and inherit copies each one but Discovery (a named pool's
// agents are its own: they feed it from their pool of its name): a field
// added to both structs but not to inherit (a pool that silently ignores
// the top-level value) fails here.
func TestEveryPoolFieldIsInherited(t *testing.T) {
	var c Config
	cv := reflect.ValueOf(&c).Elem()
	pt := reflect.TypeFor[PoolConfig]()
	for i := range pt.NumField() {
		f := pt.Field(i)
		if f.Name == "Name" {
			continue
		}
		top, ok := reflect.TypeFor[Config]().FieldByName(f.Name)
		if !ok || top.Type != f.Type {
			t.Fatalf("PoolConfig.%s (%s) has no Config field of the same name and type", f.Name, f.Type)
		}
		if f.Name == "Discovery" {
			c.Discovery = discovery.Static{"127.0.0.1:7070"}
			continue
		}
		cv.FieldByName(f.Name).Set(nonZero(t, f.Type))
	}
	p := c.inherit(PoolConfig{Name: "p"})
	if p.Discovery != nil {
		t.Errorf("a named pool inherited the default pool's Discovery %v", p.Discovery)
	}
	got := reflect.ValueOf(p)
	for i := range pt.NumField() {
		name := pt.Field(i).Name
		if name == "Name" || name == "Discovery" {
			continue
		}
		if !reflect.DeepEqual(got.Field(i).Interface(), cv.FieldByName(name).Interface()) {
			t.Errorf("PoolConfig.%s is not inherited from Config.%s", name, name)
		}
	}
	// A pool fed by agents takes no size from the default pool.
	if p := c.inherit(PoolConfig{Name: "p", Discovery: discovery.Static{"127.0.0.1:7070"}}); p.Workers != 0 || p.MinWorkers != 0 || p.MaxWorkers != 0 || p.Adapter != c.Adapter {
		t.Errorf("a pool with Discovery inherited a size (or lost the rest): %+v", p)
	}
	// A value the pool sets is its own.
	if p := c.inherit(PoolConfig{Name: "p", Workers: 9, Adapter: "a.B"}); p.Workers != 9 || p.Adapter != "a.B" {
		t.Errorf("inherit overwrote the pool's own values: %+v", p)
	}
	// MinReady counts the inherited size's workers: a pool of its own
	// size keeps its own (zero: every worker).
	if p := c.inherit(PoolConfig{Name: "p", Workers: 2}); p.MinReady != 0 {
		t.Errorf("a pool of its own size inherited MinReady %d", p.MinReady)
	}
}

func nonZero(t *testing.T, typ reflect.Type) reflect.Value {
	v := reflect.New(typ).Elem()
	switch typ.Kind() {
	case reflect.Int, reflect.Int64:
		v.SetInt(7)
	case reflect.Float64:
		v.SetFloat(0.7)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.String:
		v.SetString("x.Y")
	case reflect.Slice:
		v.Set(reflect.MakeSlice(typ, 1, 1))
	case reflect.Map:
		v.Set(reflect.MakeMap(typ))
	case reflect.Interface:
		v.Set(reflect.ValueOf(&fake.Factory{}))
	default:
		t.Fatalf("no test value for a %s field; extend nonZero", typ)
	}
	return v
}
