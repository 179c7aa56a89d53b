package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxConfigSize bounds how much of a configuration file is read.
const maxConfigSize = 4 << 20

// maxNodes bounds how many YAML nodes (aliases followed) a file may expand to.
const maxNodes = 100_000

// Load reads the configuration file at path; see Parse. Relative paths in the
// file (data_dir, *_file) are relative to the working directory, not to the
// file. On failure the error wraps a *ValidationError when the file was
// readable YAML.
func Load(path string, getenv func(string) string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	defer f.Close()
	c, err := Parse(f, getenv)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	return c, nil
}

// Parse reads a YAML configuration from r: it expands ${VAR} in values with
// getenv ("$${" stands for a literal "${"), refuses unknown keys and values of
// the wrong type, applies defaults, reads github.webhook_secret_file into
// GitHub.WebhookSecret, and validates what could be read. All problems found,
// in the file's shape and in its values, are returned at once as a
// *ValidationError, each with its YAML path and line, in line order; a value
// that could not be read is reported once, without the problems that its
// absence would cause. A file that is not YAML at all gives a plain error.
// Error messages never contain secret values.
func Parse(r io.Reader, getenv func(string) string) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("read config: larger than %d bytes", maxConfigSize)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse config: more than one YAML document")
	}

	w := &walker{
		getenv:       getenv,
		lines:        map[string]int{},
		unread:       map[string]bool{},
		expanded:     map[*yaml.Node]error{},
		placeholders: map[*yaml.Node]bool{},
	}
	c := &Config{lines: w.lines, unread: w.unread}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != 0 {
		if !w.walk(root, reflect.TypeFor[Config](), "") || w.nodes > maxNodes {
			return nil, newValidationError(w.problems) // nothing worth validating
		}
		// The walk left only what decodes: values that could not be read
		// are placeholders now, so that the rest can still be validated.
		if err := root.Decode(c); err != nil {
			if len(w.problems) > 0 {
				return nil, newValidationError(w.problems)
			}
			return nil, fmt.Errorf("decode config: %w", err)
		}
	}

	c.applyDefaults(func(path string) bool { _, ok := w.lines[path]; return ok })
	fileProblems := c.readSecretFiles()
	problems := append(w.problems, fileProblems...)
	if err := c.Validate(); err != nil {
		var ve *ValidationError
		if !errors.As(err, &ve) {
			return nil, err
		}
		for _, p := range ve.Problems {
			if !slices.ContainsFunc(fileProblems, func(q Problem) bool { return q.Path == p.Path }) {
				problems = append(problems, p)
			}
		}
	}
	if len(problems) > 0 {
		return nil, newValidationError(problems)
	}
	return c, nil
}

// readSecretFiles reads the *_file secrets into their values.
func (c *Config) readSecretFiles() []Problem {
	return append(c.readWebhookSecret(), c.readNotificationFiles()...)
}

// readWebhookSecret reads github.webhook_secret_file into its value.
func (c *Config) readWebhookSecret() []Problem {
	var problems []Problem
	gh := &c.GitHub
	if gh.WebhookSecretFile == "" {
		return nil
	}
	if gh.WebhookSecret != "" {
		return append(problems, c.problem("github.webhook_secret",
			"set either github.webhook_secret or github.webhook_secret_file, not both"))
	}
	b, err := os.ReadFile(gh.WebhookSecretFile)
	if err != nil {
		return append(problems, c.problem("github.webhook_secret_file",
			fmt.Sprintf("cannot read the webhook secret: %v", describeFileError(err))))
	}
	gh.WebhookSecret = Secret(strings.TrimRight(string(b), "\r\n"))
	return problems
}

// describeFileError explains a file error without its content.
func describeFileError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%s: %v", pe.Path, pe.Err)
	}
	return err.Error()
}

// walker checks a YAML node tree against the Config type before it is
// decoded: it expands ${VAR} in scalar values, refuses unknown and duplicate
// keys and values of the wrong type, drops null struct fields (so null means
// "unset"), and records the line of every path. It leaves a tree that
// decodes: refused keys are dropped and values that cannot be read are
// replaced by placeholders (see unreadable).
type walker struct {
	getenv func(string) string
	lines  map[string]int
	// unread holds the paths whose values could not be read (a problem
	// says why) and those a misspelt key probably meant; validation does
	// not check them again.
	unread   map[string]bool
	problems []Problem
	// expanded holds the scalars whose ${VAR} were expanded, with the
	// error if that failed: an anchored scalar is expanded once.
	expanded map[*yaml.Node]error
	// placeholders are the nodes put in place of unreadable values.
	placeholders map[*yaml.Node]bool
	nodes        int
}

func (w *walker) add(path string, line int, format string, args ...any) {
	w.problems = append(w.problems, Problem{Path: displayPath(path), Line: line, Message: fmt.Sprintf(format, args...)})
}

// displayPath names the document root.
func displayPath(path string) string {
	if path == "" {
		return "(root)"
	}
	return path
}

// walk checks n against type t at path. It returns false when n itself
// cannot be decoded into t (a problem says why): the caller then puts a
// placeholder in its place. Unreadable values deeper down are replaced in
// place.
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) bool {
	if w.placeholders[n] {
		w.unread[path] = true // met again through an alias or a merge
		return true
	}
	w.nodes++
	if w.nodes > maxNodes {
		if w.nodes == maxNodes+1 {
			w.add(path, n.Line, "document too large (more than %d nodes, aliases expanded)", maxNodes)
		}
		return false
	}
	if n.Kind == yaml.AliasNode {
		return n.Alias == nil || w.walk(n.Alias, t, path)
	}
	if isNull(n) {
		return true
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		return w.scalar(n, t, path)
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.add(path, n.Line, "expected a mapping, got %s", kindName(n))
			return false
		}
		w.structFields(n, t, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.add(path, n.Line, "expected a mapping, got %s", kindName(n))
			return false
		}
		w.mapEntries(n, t, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.add(path, n.Line, "expected a list, got %s", kindName(n))
			return false
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			w.lines[p] = item.Line
			if !w.walk(item, t.Elem(), p) {
				n.Content[i] = w.unreadable(item, t.Elem(), p)
			}
		}
	default:
		return w.scalar(n, t, path)
	}
	return true
}

// unreadable records that the value n at path could not be read and returns
// the placeholder that takes its place: it decodes to the zero value of t,
// so that the rest of the document can still be decoded and validated.
func (w *walker) unreadable(n *yaml.Node, t reflect.Type, path string) *yaml.Node {
	w.unread[path] = true
	ph := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line, Column: n.Column}
	if t.Kind() == reflect.String {
		ph.Tag = "!!str" // a list drops null items, which would shift the indexes of the rest
	}
	w.placeholders[ph] = true
	return ph
}

// structFields checks the keys of mapping n against struct type t.
func (w *walker) structFields(n *yaml.Node, t reflect.Type, path string) {
	fields := yamlFields(t)
	seen := map[string]int{}
	var meant []string // keys that misspelt ones probably meant
	kept := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if isMerge(k) {
			if w.merge(v, t, path) {
				kept = append(kept, k, v)
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.add(path, k.Line, "keys must be plain names")
			continue
		}
		p := joinPath(path, k.Value)
		f, ok := fields[k.Value]
		if !ok {
			msg := fmt.Sprintf("unknown key %q", k.Value)
			if s := suggest(k.Value, fields); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
				meant = append(meant, s)
			}
			w.add(p, k.Line, "%s", msg)
			continue
		}
		if line, dup := seen[k.Value]; dup {
			w.add(p, k.Line, "key repeated (first at line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		if isNull(v) && !w.placeholders[v] {
			continue // null means unset: drop it so that defaults apply
		}
		w.lines[p] = k.Line
		if !w.walk(v, f.Type, p) {
			v = w.unreadable(v, f.Type, p)
		}
		kept = append(kept, k, v)
	}
	for _, name := range meant {
		if _, ok := seen[name]; !ok {
			// "required" for the key meant would repeat the problem.
			w.unread[joinPath(path, name)] = true
		}
	}
	n.Content = kept
}

// mapEntries checks the entries of mapping n against map type t.
func (w *walker) mapEntries(n *yaml.Node, t reflect.Type, path string) {
	seen := map[string]int{}
	kept := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if isMerge(k) {
			if w.merge(v, t, path) {
				kept = append(kept, k, v)
			}
			continue
		}
		if k.Kind != yaml.ScalarNode || isNull(k) {
			w.add(path, k.Line, "keys must be plain names")
			continue
		}
		p := joinPath(path, k.Value)
		if line, dup := seen[k.Value]; dup {
			w.add(p, k.Line, "key repeated (first at line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		w.lines[p] = k.Line
		if !w.walk(v, t.Elem(), p) {
			v = w.unreadable(v, t.Elem(), p) // keep the key: it exists
		}
		kept = append(kept, k, v)
	}
	n.Content = kept
}

// merge checks the value of a "<<" merge key: a mapping, or a list of them.
// It returns false when the value cannot be merged; list items that cannot
// be merged are dropped.
func (w *walker) merge(v *yaml.Node, t reflect.Type, path string) bool {
	if v.Kind == yaml.SequenceNode {
		kept := v.Content[:0:0]
		for _, item := range v.Content {
			if w.mergeItem(item, t, path) {
				kept = append(kept, item)
			}
		}
		v.Content = kept
		return true
	}
	return w.mergeItem(v, t, path)
}

// mergeItem checks one mapping to merge. Unlike a value, it may not be null.
func (w *walker) mergeItem(v *yaml.Node, t reflect.Type, path string) bool {
	n := v
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if isNull(n) {
		w.add(path, v.Line, "expected a mapping to merge, got %s", kindName(n))
		return false
	}
	return w.walk(v, t, path)
}

// scalar expands ${VAR} in n and checks that it decodes into type t; it
// returns false when it does not.
func (w *walker) scalar(n *yaml.Node, t reflect.Type, path string) bool {
	if n.Kind != yaml.ScalarNode {
		w.add(path, n.Line, "expected a single value, got %s", kindName(n))
		return false
	}
	err, done := w.expanded[n]
	if !done {
		var v string
		v, err = expand(n.Value, w.getenv)
		w.expanded[n] = err
		if err == nil && v != n.Value {
			n.Value = v
			if t.Kind() == reflect.String {
				n.Tag = "!!str" // an expanded value is text, whatever it looks like
			} else {
				// Resolve the expanded text as a plain scalar, quoted or
				// not: a number, a boolean, a duration.
				n.Tag, n.Style = "", 0
			}
		}
	}
	if err != nil {
		w.add(path, n.Line, "%v", err)
		return false
	}
	if t.Kind() == reflect.String && !reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		return true // any scalar decodes into a string
	}
	if t == reflect.TypeFor[time.Duration]() {
		// A time.Duration (deployer's health timeouts) reads as a Duration
		// does, with its messages. yaml reads a Go duration into a
		// time.Duration from text only, "0" included: mark it as text.
		var d Duration
		if err := d.UnmarshalYAML(n); err != nil {
			w.add(path, n.Line, "%v", err)
			return false
		}
		n.Tag = "!!str"
		return true
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			w.add(path, n.Line, "expected %s, got %q", typeName(t), truncate(n.Value, 40))
			return false
		}
		w.add(path, n.Line, "%v", err)
		return false
	}
	return true
}

// expand replaces ${NAME} in s with getenv(NAME); "$${" is a literal "${".
// An unset or empty variable is an error.
func expand(s string, getenv func(string) string) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i]) // keeps one '$' of "$${"
			b.WriteString("{")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", errors.New(`unterminated "${": write ${NAME}, or $${ for a literal "${"`)
		}
		name := s[i+2 : i+end]
		if !validEnvName(name) {
			// The text is not quoted: it may be part of a secret.
			return "", errors.New(`invalid variable reference: write ${NAME} (letters, digits, _), or $${ for a literal "${"`)
		}
		v := getenv(name)
		if v == "" {
			return "", fmt.Errorf("environment variable %s is not set (or empty)", name)
		}
		b.WriteString(v)
		s = s[i+end+1:]
	}
}

// validEnvName reports whether name is [A-Za-z_][A-Za-z0-9_]*.
func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c != '_' && !('a' <= c && c <= 'z') && !('A' <= c && c <= 'Z') && !(i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// yamlFields maps the YAML key names of struct type t to its fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	fields := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name := yamlName(f); name != "" {
			fields[name] = f
		}
	}
	return fields
}

// yamlName returns the YAML key of a struct field, or "" if it has none.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name
}

// suggest returns the known key closest to key, if it is close.
func suggest(key string, fields map[string]reflect.StructField) string {
	best, bestD := "", 3
	for name := range fields {
		if d := editDistance(key, name); d < bestD || (d == bestD && d < 3 && name < best) {
			best, bestD = name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(truncate(n.Value, 40))
	}
	return "something else"
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[Duration](), t == reflect.TypeFor[time.Duration]():
		return "a duration such as 60s"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	}
	return "a " + t.String()
}
