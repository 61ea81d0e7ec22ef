package config

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// decoder turns HCL attributes into Go values, collecting a diagnostic for every problem
// instead of stopping at the first. Every diagnostic's Subject is the offending value's range.
type decoder struct {
	diags hcl.Diagnostics
}

func (d *decoder) errorf(subject hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  subject.Ptr(),
	})
}

func (d *decoder) warnf(subject hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  subject.Ptr(),
	})
}

// content is body.Content with the diagnostics kept; HCL itself reports unknown arguments and
// block types (with a "Did you mean" hint).
func (d *decoder) content(body hcl.Body, schema *hcl.BodySchema) *hcl.BodyContent {
	c, diags := body.Content(schema)
	for _, diag := range diags {
		switch diag.Summary {
		case "Unsupported argument":
			names := make([]string, len(schema.Attributes))
			for i, a := range schema.Attributes {
				names[i] = a.Name
			}
			diag.Detail += acceptedHint("Arguments", names)
		case "Unsupported block type":
			names := make([]string, len(schema.Blocks))
			for i, b := range schema.Blocks {
				names[i] = b.Type
			}
			diag.Detail += acceptedHint("Blocks", names)
		}
	}
	d.diags = append(d.diags, diags...)
	return c
}

func acceptedHint(what string, names []string) string {
	if len(names) == 0 {
		return " No " + strings.ToLower(what) + " are accepted here."
	}
	return " " + what + " accepted here: " + strings.Join(names, ", ") + "."
}

// single returns the only block of type typ, reporting every further one as a duplicate.
func (d *decoder) single(blocks hcl.Blocks, typ string) *hcl.Block {
	var first *hcl.Block
	for _, b := range blocks.OfType(typ) {
		if first == nil {
			first = b
			continue
		}
		d.errorf(b.DefRange, "Duplicate "+typ+" block",
			"Only one %s block is allowed here; the first one is at %s. Merge the two.", typ, first.DefRange)
	}
	return first
}

// required reports a missing required argument, with the block's header as the subject.
func (d *decoder) required(c *hcl.BodyContent, block hcl.Range, name, hint string) {
	if attr := c.Attributes[name]; attr != nil {
		return
	}
	d.errorf(block, "Missing required argument", "The argument %q is required: %s", name, hint)
}

// value evaluates attr. ok is false when there is an error (reported) or the value is null
// (HCL's way of writing "unset"; not an error).
func (d *decoder) value(attr *hcl.Attribute) (v cty.Value, ok bool) {
	v, diags := attr.Expr.Value(nil)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() || v.IsNull() {
		return cty.NilVal, false
	}
	if !v.IsWhollyKnown() {
		d.errorf(attr.Expr.Range(), "Unknown value", "The value of %q must be a constant.", attr.Name)
		return cty.NilVal, false
	}
	return v, true
}

// convert converts v to ty; what names the type for the error ("a string").
func (d *decoder) convert(attr *hcl.Attribute, v cty.Value, ty cty.Type, hint string) (cty.Value, bool) {
	cv, err := convert.Convert(v, ty)
	if err != nil {
		msg := err.Error()
		var pe cty.PathError
		if errors.As(err, &pe) && len(pe.Path) > 0 {
			if idx, ok := pe.Path[0].(cty.IndexStep); ok && idx.Key.Type() == cty.Number {
				bf := idx.Key.AsBigFloat()
				n, _ := bf.Int64()
				msg = fmt.Sprintf("element %d: %s", n, err.Error())
			}
		}
		d.errorf(attr.Expr.Range(), "Incorrect attribute value type",
			"Inappropriate value for attribute %q: %s. %s", attr.Name, msg, hint)
		return cty.NilVal, false
	}
	if cv.IsNull() {
		return cty.NilVal, false
	}
	return cv, true
}

func (d *decoder) str(attr *hcl.Attribute, hint string) (string, bool) {
	if attr == nil {
		return "", false
	}
	v, ok := d.value(attr)
	if !ok {
		return "", false
	}
	if v, ok = d.convert(attr, v, cty.String, hint); !ok {
		return "", false
	}
	return v.AsString(), true
}

func (d *decoder) boolean(attr *hcl.Attribute) (bool, bool) {
	if attr == nil {
		return false, false
	}
	v, ok := d.value(attr)
	if !ok {
		return false, false
	}
	if v, ok = d.convert(attr, v, cty.Bool, "Write true or false."); !ok {
		return false, false
	}
	return v.True(), true
}

// strList decodes a list of strings. ranges[i] is element i's range when the expression is a
// literal list, otherwise the whole value's range.
func (d *decoder) strList(attr *hcl.Attribute, hint string) (list []string, ranges []hcl.Range, ok bool) {
	if attr == nil {
		return nil, nil, false
	}
	v, ok := d.value(attr)
	if !ok {
		return nil, nil, false
	}
	if v, ok = d.convert(attr, v, cty.List(cty.String), hint); !ok {
		return nil, nil, false
	}
	exprs, diags := hcl.ExprList(attr.Expr)
	if diags.HasErrors() || len(exprs) != v.LengthInt() {
		exprs = nil
	}
	list = []string{}
	for i, e := range v.AsValueSlice() {
		rng := attr.Expr.Range()
		if exprs != nil {
			rng = exprs[i].Range()
		}
		if e.IsNull() {
			d.errorf(rng, "Null list element", "Element %d of %q is null. %s", i, attr.Name, hint)
			ok = false
			continue
		}
		list = append(list, e.AsString())
		ranges = append(ranges, rng)
	}
	return list, ranges, ok
}

// number decodes a non-negative number (messages per second and the like).
func (d *decoder) number(attr *hcl.Attribute, zero string) (*big.Float, bool) {
	v, ok := d.value(attr)
	if !ok {
		return nil, false
	}
	if v, ok = d.convert(attr, v, cty.Number, "Write a number such as 100"+zeroHint(zero)+"."); !ok {
		return nil, false
	}
	bf := v.AsBigFloat()
	if bf.Sign() < 0 {
		d.errorf(attr.Expr.Range(), "Negative value", "%q must not be negative%s.", attr.Name, zeroHint(zero))
		return nil, false
	}
	return bf, true
}

func zeroHint(zero string) string {
	if zero == "" {
		return ""
	}
	return "; 0 means " + zero
}

// integer decodes a whole number >= min.
func (d *decoder) integer(attr *hcl.Attribute, min int, zero string) (int, bool) {
	if attr == nil {
		return 0, false
	}
	bf, ok := d.number(attr, zero)
	if !ok {
		return 0, false
	}
	if !bf.IsInt() {
		d.errorf(attr.Expr.Range(), "Whole number required", "%q must be a whole number, got %s.", attr.Name, formatNumber(bf))
		return 0, false
	}
	n, acc := bf.Int64()
	if acc != big.Exact || n > math.MaxInt32 {
		d.errorf(attr.Expr.Range(), "Value out of range", "%q must be at most %d.", attr.Name, math.MaxInt32)
		return 0, false
	}
	if int(n) < min {
		d.errorf(attr.Expr.Range(), "Value out of range", "%q must be at least %d.", attr.Name, min)
		return 0, false
	}
	return int(n), true
}

// rate decodes a non-negative, finite number of events per second.
func (d *decoder) rate(attr *hcl.Attribute, zero string) (float64, bool) {
	bf, ok := d.number(attr, zero)
	if !ok {
		return 0, false
	}
	f, _ := bf.Float64()
	if math.IsInf(f, 0) {
		d.errorf(attr.Expr.Range(), "Value out of range", "%q is too large%s.", attr.Name, zeroHint(zero))
		return 0, false
	}
	return f, true
}

const sizeHint = `A size is a whole number of bytes (1048576) or a string with a unit: binary "512B", "64KiB", "1MiB", "1GiB" or decimal "10KB", "1MB"`

// size decodes a size: a number of bytes or a string with a unit (see ParseSize).
func (d *decoder) size(attr *hcl.Attribute, zero string) (int64, bool) {
	v, ok := d.value(attr)
	if !ok {
		return 0, false
	}
	if v.Type() == cty.Number {
		bf := v.AsBigFloat()
		switch n, acc := bf.Int64(); {
		case bf.Sign() < 0:
			d.errorf(attr.Expr.Range(), "Negative value", "%q must not be negative%s.", attr.Name, zeroHint(zero))
		case !bf.IsInt():
			d.errorf(attr.Expr.Range(), "Invalid size", "%s is not a whole number of bytes. %s.", formatNumber(bf), sizeHint)
		case acc != big.Exact:
			d.errorf(attr.Expr.Range(), "Invalid size", "%s is too large. %s.", formatNumber(bf), sizeHint)
		default:
			return n, true
		}
		return 0, false
	}
	if v, ok = d.convert(attr, v, cty.String, sizeHint+"."); !ok {
		return 0, false
	}
	n, err := ParseSize(v.AsString())
	if errors.Is(err, errNegative) {
		d.errorf(attr.Expr.Range(), "Negative value", "%q must not be negative%s.", attr.Name, zeroHint(zero))
		return 0, false
	}
	if err != nil {
		d.errorf(attr.Expr.Range(), "Invalid size", "%s. %s%s.", capitalize(err.Error()), sizeHint, zeroHint(zero))
		return 0, false
	}
	return n, true
}

const durationHint = `A duration is a Go duration string: a number with a unit ns, us, ms, s, m or h, for example "500ms", "30s", "5m", "1h30m"`

// duration decodes a Go duration string. A bare number is accepted only when it is 0.
func (d *decoder) duration(attr *hcl.Attribute, zero string) (time.Duration, bool) {
	v, ok := d.value(attr)
	if !ok {
		return 0, false
	}
	if v.Type() == cty.Number {
		bf := v.AsBigFloat()
		if bf.Sign() == 0 {
			return 0, true
		}
		d.errorf(attr.Expr.Range(), "Invalid duration", "A duration needs a unit: write %q, not %s. %s%s.",
			formatNumber(bf)+"s", formatNumber(bf), durationHint, zeroHint(zero))
		return 0, false
	}
	if v, ok = d.convert(attr, v, cty.String, durationHint+"."); !ok {
		return 0, false
	}
	s := v.AsString()
	dur, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		d.errorf(attr.Expr.Range(), "Invalid duration", "%q is not a duration. %s%s.", s, durationHint, zeroHint(zero))
		return 0, false
	}
	if dur < 0 {
		d.errorf(attr.Expr.Range(), "Negative value", "%q must not be negative%s.", attr.Name, zeroHint(zero))
		return 0, false
	}
	return dur, true
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
