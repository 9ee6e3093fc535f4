using System.Globalization;
using System.Net;
using System.Text;

namespace GptSharp.Training.Plots;

/// <summary>One line of a chart.</summary>
internal sealed record ChartSeries(string Label, IReadOnlyList<double> X, IReadOnlyList<double> Y, string Color, string? DashArray = null);

/// <summary>
/// A small, dependency-free line chart rendered as SVG, in the spirit of matplotlib's defaults: axes with
/// "nice" ticks, a legend in the upper right, an optional second x axis on top that maps the bottom
/// axis to another unit (the book's "Tokens seen" over "Epochs"), and an optional logarithmic y axis.
/// </summary>
internal sealed class SvgLineChart
{
    /// <summary>Prefix of the element ids, unique per chart so several charts can be inlined in one HTML page.</summary>
    public string Id { get; init; } = "chart";

    public string Title { get; init; } = "";
    public string XLabel { get; init; } = "";
    public string YLabel { get; init; } = "";
    public bool LogY { get; init; }
    public int Width { get; init; } = 640;
    public int Height { get; init; } = 400;

    /// <summary>Label and mapping of the top x axis (a linear function of the bottom x), or null for none.</summary>
    public (string Label, Func<double, double> FromX)? TopAxis { get; init; }

    /// <summary>Whether bottom x ticks are integers only (matplotlib's <c>MaxNLocator(integer=True)</c>).</summary>
    public bool IntegerXTicks { get; init; }

    public List<ChartSeries> Series { get; } = [];

    private const double Left = 72, Right = 24, Bottom = 52;
    private double Top => TopAxis is null ? 36 : 76;

    public string Render()
    {
        var points = Series.SelectMany(s => s.X.Zip(s.Y)).Where(p => double.IsFinite(p.First) && double.IsFinite(p.Second) && (!LogY || p.Second > 0)).ToList();
        double xMin = points.Count > 0 ? points.Min(p => p.First) : 0, xMax = points.Count > 0 ? points.Max(p => p.First) : 1;
        double yMin = points.Count > 0 ? points.Min(p => p.Second) : 0, yMax = points.Count > 0 ? points.Max(p => p.Second) : 1;
        if (LogY) { yMin = Math.Log10(yMin); yMax = Math.Log10(yMax); }
        if (xMax - xMin < 1e-12) { xMin -= 0.5; xMax += 0.5; }
        if (yMax - yMin < 1e-12) { yMin -= 0.5; yMax += 0.5; }
        double[] xTicks = IntegerXTicks ? NiceTicks(xMin, xMax, 7, integer: true) : NiceTicks(xMin, xMax, 7);
        double[] yTicks = LogY ? LogTicks(yMin, yMax) : NiceTicks(yMin, yMax, 6);
        // Axis limits: the data plus a 5% margin, as matplotlib pads its auto-scaled axes.
        double xPad = (xMax - xMin) * 0.05, yPad = (yMax - yMin) * 0.05;
        double x0 = xMin - xPad, x1 = xMax + xPad, y0 = yMin - yPad, y1 = yMax + yPad;
        double plotW = Width - Left - Right, plotH = Height - Top - Bottom;
        double Sx(double x) => Left + (x - x0) / (x1 - x0) * plotW;
        double Sy(double y) => Top + (1 - ((LogY ? Math.Log10(y) : y) - y0) / (y1 - y0)) * plotH;
        double SyRaw(double v) => Top + (1 - (v - y0) / (y1 - y0)) * plotH;

        var svg = new StringBuilder();
        svg.Append(F($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" viewBox=\"0 0 {Width} {Height}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n"));
        svg.Append(F($"<rect width=\"{Width}\" height=\"{Height}\" fill=\"white\"/>\n"));
        if (Title.Length > 0)
            svg.Append(F($"<text x=\"{Width / 2.0:0.#}\" y=\"{(TopAxis is null ? 22 : 16)}\" text-anchor=\"middle\" font-size=\"14\">{Esc(Title)}</text>\n"));

        // Ticks and labels.
        svg.Append("<g stroke=\"#000\" stroke-width=\"1\">\n");
        foreach (double t in xTicks.Where(t => t >= x0 && t <= x1))
            svg.Append(F($"<line x1=\"{Sx(t):0.##}\" y1=\"{Top + plotH:0.##}\" x2=\"{Sx(t):0.##}\" y2=\"{Top + plotH + 4:0.##}\"/>\n"));
        foreach (double t in yTicks.Where(t => t >= y0 && t <= y1))
            svg.Append(F($"<line x1=\"{Left - 4:0.##}\" y1=\"{SyRaw(t):0.##}\" x2=\"{Left:0.##}\" y2=\"{SyRaw(t):0.##}\"/>\n"));
        svg.Append("</g>\n<g fill=\"#000\">\n");
        foreach (double t in xTicks.Where(t => t >= x0 && t <= x1))
            svg.Append(F($"<text x=\"{Sx(t):0.##}\" y=\"{Top + plotH + 18:0.##}\" text-anchor=\"middle\">{FormatTick(t)}</text>\n"));
        foreach (double t in yTicks.Where(t => t >= y0 && t <= y1))
            svg.Append(F($"<text x=\"{Left - 7:0.##}\" y=\"{SyRaw(t) + 4:0.##}\" text-anchor=\"end\">{FormatTick(LogY ? Math.Pow(10, t) : t)}</text>\n"));
        svg.Append(F($"<text x=\"{Left + plotW / 2:0.##}\" y=\"{Height - 12:0.##}\" text-anchor=\"middle\" font-size=\"13\">{Esc(XLabel)}</text>\n"));
        svg.Append(F($"<text transform=\"translate(18 {Top + plotH / 2:0.##}) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">{Esc(YLabel)}</text>\n"));
        svg.Append("</g>\n");

        if (TopAxis is var (topLabel, fromX))
        {
            double t0 = fromX(x0), t1 = fromX(x1);
            double lo = Math.Min(t0, t1), hi = Math.Max(t0, t1);
            double[] topTicks = NiceTicks(lo, hi, 6);
            svg.Append("<g>\n");
            foreach (double t in topTicks.Where(t => t >= lo && t <= hi))
            {
                double x = Left + (t - t0) / (t1 - t0) * plotW;
                svg.Append(F($"<line x1=\"{x:0.##}\" y1=\"{Top:0.##}\" x2=\"{x:0.##}\" y2=\"{Top - 4:0.##}\" stroke=\"#000\"/>\n"));
                svg.Append(F($"<text x=\"{x:0.##}\" y=\"{Top - 8:0.##}\" text-anchor=\"middle\">{FormatTick(t)}</text>\n"));
            }
            svg.Append(F($"<text x=\"{Left + plotW / 2:0.##}\" y=\"{Top - 26:0.##}\" text-anchor=\"middle\" font-size=\"13\">{Esc(topLabel)}</text>\n"));
            svg.Append("</g>\n");
        }

        // Series, clipped to the plot area.
        svg.Append(F($"<clipPath id=\"{Id}-plot-area\"><rect x=\"{Left:0.##}\" y=\"{Top:0.##}\" width=\"{plotW:0.##}\" height=\"{plotH:0.##}\"/></clipPath>\n"));
        svg.Append(F($"<g clip-path=\"url(#{Id}-plot-area)\" fill=\"none\" stroke-width=\"1.8\" stroke-linejoin=\"round\">\n"));
        foreach (var s in Series)
        {
            var path = new StringBuilder();
            bool penDown = false;
            for (int i = 0; i < Math.Min(s.X.Count, s.Y.Count); i++)
            {
                double x = s.X[i], y = s.Y[i];
                if (!double.IsFinite(x) || !double.IsFinite(y) || (LogY && y <= 0)) { penDown = false; continue; }
                path.Append(F($"{(penDown ? "L" : "M")}{Sx(x):0.##},{Sy(y):0.##} "));
                penDown = true;
            }
            string dash = s.DashArray is null ? "" : $" stroke-dasharray=\"{s.DashArray}\"";
            svg.Append(F($"<path class=\"series\" data-label=\"{Esc(s.Label)}\" d=\"{path.ToString().TrimEnd()}\" stroke=\"{s.Color}\"{dash}/>\n"));
        }
        svg.Append("</g>\n");
        svg.Append(F($"<rect x=\"{Left:0.##}\" y=\"{Top:0.##}\" width=\"{plotW:0.##}\" height=\"{plotH:0.##}\" fill=\"none\" stroke=\"#000\"/>\n"));

        // Legend, upper right.
        if (Series.Count > 0)
        {
            double legendW = 36 + 7.2 * Series.Max(s => s.Label.Length), legendH = 8 + 20 * Series.Count;
            double lx = Left + plotW - legendW - 10, ly = Top + 10;
            svg.Append(F($"<g class=\"legend\"><rect x=\"{lx:0.##}\" y=\"{ly:0.##}\" width=\"{legendW:0.##}\" height=\"{legendH:0.##}\" rx=\"3\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n"));
            for (int i = 0; i < Series.Count; i++)
            {
                var s = Series[i];
                double y = ly + 14 + 20 * i;
                string dash = s.DashArray is null ? "" : $" stroke-dasharray=\"{s.DashArray}\"";
                svg.Append(F($"<line x1=\"{lx + 8:0.##}\" y1=\"{y:0.##}\" x2=\"{lx + 30:0.##}\" y2=\"{y:0.##}\" stroke=\"{s.Color}\" stroke-width=\"1.8\"{dash}/>\n"));
                svg.Append(F($"<text x=\"{lx + 36:0.##}\" y=\"{y + 4:0.##}\">{Esc(s.Label)}</text>\n"));
            }
            svg.Append("</g>\n");
        }
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    /// <summary>Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [min, max] with about <paramref name="target"/> ticks.</summary>
    public static double[] NiceTicks(double min, double max, int target, bool integer = false)
    {
        double range = max - min;
        if (!(range > 0)) return [min];
        double raw = range / Math.Max(1, target - 1);
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1, 2, 2.5, 5, 10 }.Select(m => m * magnitude).First(s => s >= raw);
        if (integer) step = Math.Max(1, Math.Ceiling(step));
        double first = Math.Floor(min / step) * step;
        var ticks = new List<double>();
        for (double t = first; t <= max + step * 0.5 && ticks.Count < 100; t += step)
            ticks.Add(Math.Round(t / step) * step);
        return ticks.ToArray();
    }

    /// <summary>Ticks for a log10 axis given in log units: every decade, with 2 and 5 in between when the range is short.</summary>
    private static double[] LogTicks(double logMin, double logMax)
    {
        var ticks = new List<double>();
        bool fine = logMax - logMin < 2.5;
        for (int d = (int)Math.Floor(logMin) - 1; d <= (int)Math.Ceiling(logMax); d++)
        {
            ticks.Add(d);
            if (fine) { ticks.Add(d + Math.Log10(2)); ticks.Add(d + Math.Log10(5)); }
        }
        return ticks.ToArray();
    }

    private static string FormatTick(double v)
    {
        double a = Math.Abs(v);
        if (a >= 1e6) return F($"{v / 1e6:0.##}M");
        if (a >= 1e4) return F($"{v / 1e3:0.##}k");
        if (a == 0 || a >= 1) return F($"{v:0.##}");
        return F($"{v:0.###}");
    }

    private static string Esc(string text) => WebUtility.HtmlEncode(text);

    private static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
