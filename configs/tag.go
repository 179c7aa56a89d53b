package configs

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"text/template"
	"unicode/utf8"

	"github.com/deployd/deployd/deployer"
)

// MaxTagLen is the longest image tag a registry accepts (deployer.ValidTag
// checks a tag).
const MaxTagLen = 128

// tagByte reports whether c may appear in a tag, at its start when first.
func tagByte(c byte, first bool) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_':
		return true
	case c == '.' || c == '-':
		return !first
	}
	return false
}

// tagAlphabet lists every byte a tag may contain.
const tagAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"

// IsTagPattern reports whether s contains glob syntax (path.Match) rather
// than being a plain tag.
func IsTagPattern(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// MatchTag reports whether tag matches one of the patterns (path.Match
// syntax). Malformed patterns match nothing; Validate refuses them.
func MatchTag(patterns []string, tag string) bool {
	for _, p := range patterns {
		if ok, err := path.Match(p, tag); err == nil && ok {
			return true
		}
	}
	return false
}

// checkTagPattern returns why pattern cannot select deployable tags, or nil.
func checkTagPattern(pattern string) error {
	if pattern == "" {
		return errors.New("empty tag pattern")
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return fmt.Errorf("invalid pattern %q (path.Match syntax: * ? [a-z] \\x)", pattern)
	}
	if !IsTagPattern(pattern) {
		if !deployer.ValidTag(pattern) {
			return fmt.Errorf("%q is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})", pattern)
		}
		return nil
	}
	if !patternCanMatchTag(pattern) {
		return fmt.Errorf("pattern %q can never match a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})", pattern)
	}
	return nil
}

// patternCanMatchTag reports whether some valid tag matches the well-formed
// glob pattern. It splits the pattern into single-character items and '*',
// then tracks which tag lengths each prefix of the pattern can produce.
func patternCanMatchTag(pattern string) bool {
	items := splitGlob(pattern)
	reach := make([]bool, MaxTagLen+1) // reach[n]: the items so far can match some n-byte tag prefix
	reach[0] = true
	for _, it := range items {
		next := make([]bool, MaxTagLen+1)
		if it == "*" {
			for n := 0; n <= MaxTagLen; n++ {
				if reach[n] || (n > 0 && next[n-1]) {
					next[n] = true
				}
			}
		} else {
			first, rest := itemMatches(it)
			for n := 0; n < MaxTagLen; n++ {
				if reach[n] && ((n == 0 && first) || (n > 0 && rest)) {
					next[n+1] = true
				}
			}
		}
		reach = next
	}
	for n := 1; n <= MaxTagLen; n++ {
		if reach[n] {
			return true
		}
	}
	return false
}

// itemMatches reports whether the single-character glob item matches some
// byte allowed first in a tag, and some byte allowed after the first.
func itemMatches(item string) (first, rest bool) {
	for i := 0; i < len(tagAlphabet); i++ {
		c := tagAlphabet[i]
		if ok, _ := path.Match(item, string(c)); ok {
			rest = true
			if tagByte(c, true) {
				first = true
			}
		}
	}
	return first, rest
}

// splitGlob splits a well-formed path.Match pattern into items that each
// match one character ("a", "?", "\\*", "[a-z]") or any run ("*").
func splitGlob(p string) []string {
	var items []string
	for i := 0; i < len(p); {
		j := i + 1
		switch p[i] {
		case '\\':
			if j < len(p) {
				_, w := utf8.DecodeRuneInString(p[j:])
				j += w
			}
		case '[':
			for j < len(p) && p[j] != ']' {
				if p[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(p))
		default:
			_, w := utf8.DecodeRuneInString(p[i:])
			j = i + w
		}
		items = append(items, p[i:j])
		i = j
	}
	return items
}

// TagData is what a workflow_run tag template is executed with.
type TagData struct {
	SHA       string // full commit SHA of the run's head commit
	ShortSHA  string // its first 7 characters
	Branch    string // the run's head branch
	RunID     int64  // the workflow run's id
	RunNumber int    // the workflow run's number in its workflow
}

// sampleTagData is the data Validate executes tag templates with.
func sampleTagData() TagData {
	return TagData{
		SHA:       "0123456789abcdef0123456789abcdef01234567",
		ShortSHA:  "0123456",
		Branch:    "main",
		RunID:     9876543210,
		RunNumber: 42,
	}
}

// ExecuteTag executes the workflow_run tag template text (on.workflow_run.tag)
// with d and returns the tag. It fails if the template does not parse,
// refers to an unknown field, or does not yield a valid tag. It is safe for
// concurrent use.
func ExecuteTag(text string, d TagData) (string, error) {
	t, err := ParseTag(text)
	if err != nil {
		return "", fmt.Errorf("parse tag template: %w", err)
	}
	tag, err := t.Execute(d)
	if err != nil {
		return "", fmt.Errorf("execute tag template: %w", err)
	}
	if !deployer.ValidTag(tag) {
		return "", fmt.Errorf("tag template yields %q, not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})", truncate(tag, 40))
	}
	return tag, nil
}

// TagTemplate is a parsed workflow_run tag template, for callers that
// execute it many times. It is immutable and safe for concurrent use.
type TagTemplate struct {
	t *template.Template
}

// ParseTag parses the workflow_run tag template text once; see ExecuteTag.
func ParseTag(text string) (*TagTemplate, error) {
	t, err := template.New("tag").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	return &TagTemplate{t: t}, nil
}

// Execute executes the template with d and returns its output, which it
// does not check to be a valid tag (see ValidTag). It fails if the template
// refers to an unknown field or its output grows beyond MaxTagLen+1 bytes.
func (t *TagTemplate) Execute(d TagData) (string, error) {
	out := &limitedBuilder{max: MaxTagLen + 1}
	if err := t.t.Execute(out, d); err != nil {
		return "", err
	}
	return out.String(), nil
}

// limitedBuilder is a strings.Builder that refuses to grow beyond max bytes.
type limitedBuilder struct {
	strings.Builder
	max int
}

// Write appends p, or fails once the output would exceed max bytes.
func (b *limitedBuilder) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, errors.New("output too long for a tag")
	}
	return b.Builder.Write(p)
}

// truncate shortens s to at most n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
