package local

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// globAssets walks dir and returns a path asset for every regular file matched
// by the rules. Rules apply in order and a leading "!" removes earlier matches,
// so excludes must follow the includes they narrow (the documented contract).
func globAssets(dir string, rules []string) (map[string]*resource.Asset, error) {
	type rule struct {
		re      *regexp.Regexp
		exclude bool
	}
	compiled := make([]rule, 0, len(rules))
	for _, r := range rules {
		ex := strings.HasPrefix(r, "!")
		re, err := globRegexp(strings.TrimPrefix(r, "!"))
		if err != nil {
			return nil, fmt.Errorf("glob %q: %w", r, err)
		}
		compiled = append(compiled, rule{re, ex})
	}

	assets := map[string]*resource.Asset{}
	err := fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		for _, r := range compiled {
			if !r.re.MatchString(p) {
				continue
			}
			if r.exclude {
				delete(assets, p)
				continue
			}
			a, err := resource.NewPathAsset(filepath.Join(dir, filepath.FromSlash(p)))
			if err != nil {
				return err
			}
			assets[p] = a
		}
		return nil
	})
	return assets, err
}

// globRegexp translates the documented glob syntax to an anchored regexp:
// "**" crosses "/", "*" and "?" do not, plus [classes], [!negated] classes,
// {a,b} alternatives and backslash escapes.
func globRegexp(g string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	depth := 0 // open {...} groups, so "," is only special inside one
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch {
		case c == '*' && i+1 < len(g) && g[i+1] == '*':
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '\\' && i+1 < len(g):
			i++
			b.WriteString(regexp.QuoteMeta(string(g[i])))
		case c == '[':
			end := strings.IndexByte(g[i+1:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unterminated character class")
			}
			class := g[i+1 : i+1+end]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + class + "]")
			i += end + 1
		case c == '{':
			depth++
			b.WriteString("(?:")
		case c == '}' && depth > 0:
			depth--
			b.WriteString(")")
		case c == ',' && depth > 0:
			b.WriteString("|")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unterminated {} group")
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}
