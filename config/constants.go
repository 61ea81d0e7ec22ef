package config

import (
	"math"
	"math/big"
	"strconv"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Bounds on number literals. cty turns numbers into strings with big.Float.Text('f', -1), whose
// cost grows with the square of the binary exponent: "${1e-999999}" would hang the loader for
// minutes. A literal may be up to about 1e±1233, and all literals together carry at most 2^14
// exponent bits, which keeps any stringification under a few milliseconds.
const (
	maxLiteralExp    = 4096
	maxLiteralExpSum = 1 << 14
)

// checkConstants walks the syntax tree before anything is evaluated. Configuration values are
// constants: literals, lists, strings, and arithmetic on number literals ("1024 * 1024").
// Everything else (conditionals, for expressions, indexing, operators on strings) is reported,
// as are number literals out of range; variables and function calls are left to HCL, which
// reports them itself on evaluation.
func checkConstants(body *hclsyntax.Body) hcl.Diagnostics {
	var diags hcl.Diagnostics
	expSum := 0
	unsupported := func(rng hcl.Range, what string) {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Unsupported expression",
			Detail: what + " cannot be used in wsgate configuration: values are constants. Write the value itself, " +
				`for example 200, "64KiB", "30s" or ["a", "b"]; arithmetic is allowed on plain numbers (1024 * 1024).`,
			Subject: rng.Ptr(),
		})
	}
	hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
		switch e := n.(type) {
		case *hclsyntax.LiteralValueExpr:
			if e.Val.Type() != cty.Number || !e.Val.IsKnown() || e.Val.IsNull() {
				return nil
			}
			exp := e.Val.AsBigFloat().MantExp(nil)
			if exp < 0 {
				exp = -exp
			}
			expSum += exp
			if exp > maxLiteralExp || expSum > maxLiteralExpSum {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Number out of range",
					Detail:   "Numbers in wsgate configuration lie between 1e-1000 and 1e1000 in magnitude (or are 0).",
					Subject:  e.SrcRange.Ptr(),
				})
				expSum = math.MinInt32 // report once for the sum
			}
		case *hclsyntax.UnaryOpExpr:
			if !numericConstant(e.Val) {
				unsupported(e.SrcRange, "An operator on something other than a number")
			}
		case *hclsyntax.BinaryOpExpr:
			if !numericConstant(e.LHS) || !numericConstant(e.RHS) {
				unsupported(e.SrcRange, "An operator on something other than numbers")
			}
		case *hclsyntax.ConditionalExpr:
			unsupported(e.SrcRange, "A conditional expression")
		case *hclsyntax.ForExpr:
			unsupported(e.SrcRange, "A for expression")
		case *hclsyntax.SplatExpr:
			unsupported(e.SrcRange, "A splat expression")
		case *hclsyntax.IndexExpr:
			unsupported(e.SrcRange, "An index expression")
		case *hclsyntax.RelativeTraversalExpr:
			unsupported(e.SrcRange, "An attribute or index access")
		}
		return nil
	})
	return diags
}

// numericConstant says whether e is built only from number literals, parentheses and operators.
func numericConstant(e hclsyntax.Expression) bool {
	switch e := e.(type) {
	case *hclsyntax.LiteralValueExpr:
		return e.Val.Type() == cty.Number
	case *hclsyntax.ParenthesesExpr:
		return numericConstant(e.Expression)
	case *hclsyntax.UnaryOpExpr:
		return numericConstant(e.Val)
	case *hclsyntax.BinaryOpExpr:
		return numericConstant(e.LHS) && numericConstant(e.RHS)
	}
	return false
}

// formatNumber prints bf for a message, cheaply whatever its exponent.
func formatNumber(bf *big.Float) string {
	f, _ := bf.Float64()
	if math.IsInf(f, 0) || f == 0 && bf.Sign() != 0 {
		return "that number"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
