package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Chart geometry, in SVG user units.
const (
	chartWidth   = 800
	chartPanel   = 220 // height of each of the two panels
	chartLeft    = 70
	chartRight   = 20
	chartTop     = 40
	chartGap     = 50
	chartBottom  = 40
	chartHeight  = chartTop + 2*chartPanel + chartGap + chartBottom
	chartPlotW   = chartWidth - chartLeft - chartRight
	colorRate    = "#2b6cb0"
	colorFailed  = "#c53030"
	colorProv    = "#dd6b20"
	colorTotal   = "#38a169"
	chartFont    = `font-family="sans-serif" font-size="12"`
	chartGridCol = "#e2e8f0"
)

// WriteSVG draws r's timeline: devices completed (and failed) per second
// in the upper panel, the p99 latency of provisioning and of the whole
// exchange per second in the lower one. Hand-written SVG 1.1, no script.
func (r *Report) WriteSVG(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">
<rect width="100%%" height="100%%" fill="white"/>
`, chartWidth, chartHeight, chartWidth, chartHeight)
	title := fmt.Sprintf("%d devices, %s/%s against %s: %.0f devices/s, %d failed", r.Devices, r.Dialect, r.Credentials, r.Target, r.DevicesPerSecond, r.Failed)
	fmt.Fprintf(&b, `<text x="%d" y="20" %s font-weight="bold">%s</text>`+"\n", chartLeft, chartFont, html.EscapeString(title))

	n := max(len(r.Timeline), 1)
	xOf := func(i int) float64 { return chartLeft + float64(chartPlotW)*(float64(i)+0.5)/float64(n) }
	barW := math.Max(1, float64(chartPlotW)/float64(n)*0.8)

	// Upper panel: devices per second.
	var maxRate float64
	for _, s := range r.Timeline {
		maxRate = math.Max(maxRate, float64(s.Completed+s.Failed))
	}
	top := float64(chartTop)
	rateScale := niceCeil(maxRate)
	axes(&b, top, rateScale, "devices/s", n)
	for i, s := range r.Timeline {
		h := float64(chartPanel) * float64(s.Completed) / rateScale
		hf := float64(chartPanel) * float64(s.Failed) / rateScale
		x := xOf(i) - barW/2
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, top+chartPanel-h, barW, h, colorRate)
		if s.Failed > 0 {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, top+chartPanel-h-hf, barW, hf, colorFailed)
		}
	}
	legend(&b, top, []string{colorRate, colorFailed}, []string{"succeeded per second", "failed per second"})

	// Lower panel: p99 latencies.
	top = chartTop + chartPanel + chartGap
	var maxLat float64
	for _, s := range r.Timeline {
		maxLat = math.Max(maxLat, math.Max(s.P99ProvisioningMs, s.P99TotalMs))
	}
	latScale := niceCeil(maxLat)
	axes(&b, top, latScale, "p99 ms", n)
	line := func(color string, v func(Second) float64) {
		var pts []string
		for i, s := range r.Timeline {
			if s.Completed == 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(i), top+chartPanel-float64(chartPanel)*v(s)/latScale))
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), color)
		}
	}
	line(colorProv, func(s Second) float64 { return s.P99ProvisioningMs })
	line(colorTotal, func(s Second) float64 { return s.P99TotalMs })
	legend(&b, top, []string{colorProv, colorTotal}, []string{"p99 provisioning", "p99 whole exchange"})
	fmt.Fprintf(&b, `<text x="%d" y="%d" %s text-anchor="middle">seconds since start</text>`+"\n", chartLeft+chartPlotW/2, chartHeight-8, chartFont)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// axes draws a panel's frame, four horizontal grid lines labelled up to
// scale, and second ticks along the bottom.
func axes(b *strings.Builder, top, scale float64, label string, n int) {
	for k := 0; k <= 4; k++ {
		y := top + chartPanel - float64(chartPanel)*float64(k)/4
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", chartLeft, y, chartWidth-chartRight, y, chartGridCol)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" %s text-anchor="end">%s</text>`+"\n", chartLeft-6, y+4, chartFont, formatTick(scale*float64(k)/4))
	}
	fmt.Fprintf(b, `<text x="12" y="%.1f" %s transform="rotate(-90 12 %.1f)" text-anchor="middle">%s</text>`+"\n", top+chartPanel/2, chartFont, top+chartPanel/2, label)
	step := max(1, n/10)
	for i := 0; i < n; i += step {
		x := chartLeft + float64(chartPlotW)*(float64(i)+0.5)/float64(n)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" %s text-anchor="middle">%d</text>`+"\n", x, top+chartPanel+16, chartFont, i)
	}
}

func legend(b *strings.Builder, top float64, colors, labels []string) {
	x := float64(chartWidth - chartRight - 330)
	for i, c := range colors {
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="10" height="10" fill="%s"/>`+"\n", x, top-14, c)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" %s>%s</text>`+"\n", x+14, top-5, chartFont, html.EscapeString(labels[i]))
		x += 165
	}
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func formatTick(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}
