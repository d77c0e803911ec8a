package local

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

func TestGlobRegexp(t *testing.T) {
	cases := []struct {
		glob  string
		match []string
		miss  []string
	}{
		{"*.txt", []string{"a.txt"}, []string{"sub/a.txt", "a.txt.bak"}},
		{"**.js", []string{"a.js", "src/x/y.js"}, []string{"a.jsx"}},
		{"assets/**", []string{"assets/logos/logo.svg"}, []string{"src/assets/x"}},
		{"file?.{md,txt}", []string{"file1.md", "fileA.txt"}, []string{"file10.md", "file/.md"}},
		{"[!a]*.go", []string{"b.go"}, []string{"a.go"}},
		{`lit\*.txt`, []string{"lit*.txt"}, []string{"litx.txt"}},
	}
	for _, c := range cases {
		re, err := globRegexp(c.glob)
		if err != nil {
			t.Fatalf("%s: %v", c.glob, err)
		}
		for _, m := range c.match {
			if !re.MatchString(m) {
				t.Errorf("%s should match %s", c.glob, m)
			}
		}
		for _, m := range c.miss {
			if re.MatchString(m) {
				t.Errorf("%s should not match %s", c.glob, m)
			}
		}
	}
	for _, bad := range []string{"[abc", "{a,b"} {
		if _, err := globRegexp(bad); err == nil {
			t.Errorf("%s: expected an error", bad)
		}
	}
}

// The documented example: includes, then an exclude that removes earlier matches.
func TestGlobAssetsDocumentedExample(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"assets/logos/logo.svg", "src/index.js", "src/secret.js"} {
		p := filepath.Join(dir, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(f), 0o644)
	}
	assets, err := globAssets(dir, []string{"assets/**", "src/**.js", "!**secret.*"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for k := range assets {
		got = append(got, k)
	}
	sort.Strings(got)
	if want := []string{"assets/logos/logo.svg", "src/index.js"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
