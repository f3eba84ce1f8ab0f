package main

import (
	"fmt"
	"slices"
)

// series is one quantity measured once per repetition.
type series []float64

func (s series) median() float64 {
	if len(s) == 0 {
		return 0
	}
	t := slices.Sorted(slices.Values(s))
	if n := len(t); n%2 == 0 {
		return (t[n/2-1] + t[n/2]) / 2
	}
	return t[len(t)/2]
}

func (s series) min() float64 { return slices.Min(s) }
func (s series) max() float64 { return slices.Max(s) }

// ratio is a[i]/b[i] for each repetition: figure and baseline from the same one.
func ratio(a, b series) series {
	r := make(series, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	return r
}

// cell prints "median [min–max]" with the given verb, or the median alone for one
// sample.
func (s series) cell(verb string) string {
	if len(s) == 0 {
		return "—"
	}
	m := fmt.Sprintf(verb, s.median())
	if len(s) == 1 {
		return m
	}
	return fmt.Sprintf("%s ["+verb+"–"+verb+"]", m, s.min(), s.max())
}

// sig prints v with three significant digits, for times and speeds of any size.
func sig(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// sigCell is cell with sig formatting.
func (s series) sigCell() string {
	if len(s) == 0 {
		return "—"
	}
	if len(s) == 1 {
		return sig(s[0])
	}
	return fmt.Sprintf("%s [%s–%s]", sig(s.median()), sig(s.min()), sig(s.max()))
}

// size prints a byte count in binary units.
func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
