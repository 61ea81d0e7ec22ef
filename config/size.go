package config

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// errNegative marks a value rejected only because it is below zero, so the loader can report
// it as "Negative value" rather than as a malformed size.
var errNegative = errors.New("must not be negative")

// sizeUnits maps a lower-cased unit suffix to its multiplier. Binary units (KiB, MiB, ...) are
// powers of 1024, decimal ones (KB, MB, ...) powers of 1000, as in IEC 80000-13.
var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// ParseSize parses a size in bytes: a plain number ("1024"), or a number with a unit, binary
// ("64KiB", "1MiB", "1GiB") or decimal ("10KB", "1MB"), or "512B". Units are case-insensitive,
// a space may separate number and unit, and a fraction is accepted when the result is a whole
// number of bytes ("1.5KiB" is 1536). Negative sizes are an error.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, errors.New("empty size")
	}
	if t[0] == '-' {
		return 0, fmt.Errorf("size %q %w", s, errNegative)
	}
	i, dot := 0, false
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.' && !dot) {
		dot = dot || t[i] == '.'
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" || num == "." {
		return 0, fmt.Errorf("size %q does not start with a number", s)
	}
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q in size %q", unit, s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("size %q has a malformed number", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return r.Num().Int64(), nil
}
