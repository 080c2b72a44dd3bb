package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// readDotenv adds the NAME=VALUE lines of a dotenv file to m. Blank lines and
// # comments are skipped, `export ` is allowed, and values may be single- or
// double-quoted; double-quoted values understand \n escapes, so a multi-line
// secret fits on one line.
func readDotenv(path string, m map[string]string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return fmt.Errorf("%s:%d: want NAME=VALUE", path, n)
		}
		v = strings.TrimSpace(v)
		switch {
		case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
			if v, err = strconv.Unquote(v); err != nil {
				return fmt.Errorf("%s:%d: bad quoted value: %v", path, n, err)
			}
		case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
			v = v[1 : len(v)-1]
		}
		m[k] = v
	}
	return sc.Err()
}
