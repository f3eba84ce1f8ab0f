package main

import (
	"image/color"
	"os"
	"strings"

	"vmfs/metadata"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// hasPlot says whether the run measured anything plotPNG draws (P1 to P3, P2-vmm).
func hasPlot(r *results) bool {
	return len(r.Reads) > 0 || len(r.Random) > 0 || len(r.VMM.Seq) > 0 || len(r.Ready) > 0
}

// plotPNG draws up to four panels of medians, those the run measured:
// sequential throughput by method, random IOPS by method, the disk read
// through QEMU (P2-vmm), and time until readable by payload size.
func plotPNG(r *results, path string) error {
	var panels []*plot.Plot
	if len(r.Reads) > 0 {
		seq, err := barPanel("Sequential 1 MiB reads", "MB/s", readLabels(r.Reads), []string{"direct", "vmfs", "nbdfuse", "nbdfuse defaults"},
			func(i, m int) float64 {
				return []series{r.Reads[i].Direct, r.Reads[i].Vmfs, r.Reads[i].NBD, r.Reads[i].NBDDefault}[m].median()
			})
		if err != nil {
			return err
		}
		panels = append(panels, seq)
	}
	// Only the reads that reach the server: hot ones are the page cache's speed.
	var direct []randomRow
	for _, row := range r.Random {
		if row.Mode == "O_DIRECT" {
			direct = append(direct, row)
		}
	}
	if len(direct) > 0 {
		rnd, err := barPanel("4 KiB random reads, O_DIRECT", "IOPS", []string{"APK partition"}, []string{"vmfs", "nbdfuse"},
			func(i, m int) float64 { return []series{direct[i].Vmfs, direct[i].NBD}[m].median() })
		if err != nil {
			return err
		}
		panels = append(panels, rnd)
	}
	if len(r.VMM.Seq) > 0 {
		vmm, err := vmmPanel(r.VMM)
		if err != nil {
			return err
		}
		panels = append(panels, vmm)
	}
	if len(r.Ready) > 0 {
		ready, err := readyPanel(r.Ready)
		if err != nil {
			return err
		}
		panels = append(panels, ready)
	}

	w, h := vg.Length(6*len(panels))*vg.Inch, 6*vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Inch / 4, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	for i, p := range panels {
		p.Draw(tiles.At(dc, i, 0))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		return err
	}
	return f.Close()
}

// methodColor gives each method one color in every panel.
func methodColor(name string) color.Color {
	switch name {
	case "vmfs", "vmfs mount":
		return color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	case "nbdfuse", "nbdkit + nbdfuse":
		return color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	case "nbdfuse defaults":
		return color.RGBA{R: 0x9e, G: 0xc5, B: 0xe8, A: 0xff}
	case "copy", "pre-copied image":
		return color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	case "seed files":
		return color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	}
	return color.RGBA{R: 0x80, G: 0x80, B: 0x80, A: 0xff} // direct reads, the original file
}

func readLabels(rows []readRow) []string {
	var ls []string
	for _, row := range rows {
		f := strings.Replace(row.File, "partitions/"+metadata.APKLabel, "apk", 1)
		f = strings.Replace(f, " (passthrough)", " pt", 1)
		ls = append(ls, f+" "+row.Mode)
	}
	return ls
}

// barPanel draws groups of bars, one bar per method, value(group, method).
func barPanel(title, unit string, groups, methods []string, value func(g, m int) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = unit
	p.Legend.Top = true
	width := vg.Points(12)
	top := 0.0
	for m, name := range methods {
		vals := make(plotter.Values, len(groups))
		for g := range groups {
			vals[g] = value(g, m)
			top = max(top, vals[g])
		}
		bars, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return nil, err
		}
		bars.LineStyle.Width = 0
		bars.Color = methodColor(name)
		bars.Offset = width * (vg.Length(m) - vg.Length(len(methods)-1)/2)
		p.Add(bars)
		p.Legend.Add(name, bars)
	}
	p.Y.Max = top * 1.3 // room for the legend
	p.NominalX(groups...)
	p.X.Tick.Label.Rotation = 0.3
	p.X.Tick.Label.XAlign = draw.XRight
	return p, nil
}

// readyPanel draws time until readable against APK size, both on log scales.
func readyPanel(rows []readyRow) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Time until the disk is readable"
	p.X.Label.Text = "APK size (MiB)"
	p.Y.Label.Text = "ms"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Left = true
	top := 0.0
	for m, name := range []string{"vmfs mount", "copy", "seed files", "nbdkit + nbdfuse"} {
		xys := make(plotter.XYs, len(rows))
		for i, row := range rows {
			xys[i].X = float64(row.APKSize) / (1 << 20)
			xys[i].Y = []series{row.Vmfs, row.Copy, row.Seed, row.NBD}[m].median()
			top = max(top, xys[i].Y)
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		line.Color, points.Color = methodColor(name), methodColor(name)
		points.Shape = plotutil.Shape(m)
		p.Add(line, points)
		p.Legend.Add(name, line, points)
	}
	p.Y.Max = top * 8 // room for the legend on the log scale
	return p, nil
}
