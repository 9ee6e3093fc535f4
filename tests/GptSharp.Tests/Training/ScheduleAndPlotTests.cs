using System.Xml.Linq;
using GptSharp.Model;
using GptSharp.Training;
using GptSharp.Training.Plots;

namespace GptSharp.Tests.Training;

public class ScheduleAndPlotTests
{
    [Fact]
    public void ConstantByDefault()
    {
        var s = new LearningRateSchedule(4e-4);
        Assert.True(s.IsConstant);
        Assert.All(new long[] { 0, 1, 85, 10_000 }, step => Assert.Equal(4e-4, s.At(step)));
    }

    [Fact]
    public void WarmupThenCosineLikeAppendixD()
    {
        // Appendix D: peak 0.01 (here), initial 3e-5, min 1e-6; warmup 20 of 100 steps.
        var s = new LearningRateSchedule(PeakLr: 0.01, WarmupSteps: 20, InitialLr: 3e-5, MinLr: 1e-6, TotalSteps: 100);
        Assert.Equal(3e-5, s.At(0), 15);
        Assert.Equal(3e-5 + 10 * (0.01 - 3e-5) / 20, s.At(10), 15);
        Assert.Equal(0.01, s.At(20), 15);                        // progress 0: the peak
        Assert.Equal(1e-6 + (0.01 - 1e-6) * 0.5, s.At(60), 12);   // half way: the mean
        Assert.Equal(1e-6, s.At(100), 15);                        // the end: the floor
        Assert.Equal(1e-6, s.At(150), 15);                        // past the end: stays at the floor
        for (long step = 21; step <= 100; step++) Assert.True(s.At(step) <= s.At(step - 1));
    }

    [Fact]
    public void WarmupWithoutDecayStaysAtThePeak()
    {
        var s = new LearningRateSchedule(PeakLr: 1e-3, WarmupSteps: 4, InitialLr: 0);
        Assert.Equal([0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3], Enumerable.Range(0, 6).Select(i => s.At(i)).ToArray());
    }

    [Fact]
    public void ClipGradNormScalesToTheMaxNormOnlyWhenAbove()
    {
        using var a = new Parameter("a", 2);
        using var b = new Parameter("b", 1);
        a.Grad.Span[0] = 3; a.Grad.Span[1] = 0; b.Grad.Span[0] = 4; // global norm 5
        double norm = Gradients.ClipGradNorm([a, b], 1.0);
        Assert.Equal(5.0, norm, 6);
        float k = (float)(1.0 / (5.0 + 1e-6));
        Assert.Equal(3 * k, a.Grad.Span[0], 6);
        Assert.Equal(4 * k, b.Grad.Span[0], 6);
        double after = Math.Sqrt(a.Grad.Span[0] * a.Grad.Span[0] + b.Grad.Span[0] * b.Grad.Span[0]);
        Assert.Equal(1.0, after, 5);

        Gradients.ClipGradNorm([a, b], 10.0); // below the limit: untouched
        Assert.Equal(3 * k, a.Grad.Span[0], 6);
        Assert.Throws<ArgumentException>(() => Gradients.ClipGradNorm([a], 0));
    }

    [Fact]
    public void StepsPerEpochCountsAShortLastAccumulationGroup()
    {
        Assert.Equal(9, Trainer.StepsPerEpoch(9, 1));
        Assert.Equal(5, Trainer.StepsPerEpoch(9, 2));
        Assert.Equal(3, Trainer.StepsPerEpoch(9, 3));
    }

    private static List<EvaluationRecord> Curve(int n) =>
        Enumerable.Range(0, n).Select(i => new EvaluationRecord(5 * i, 1 + i / 2, 2560L * (i + 1), 10 - 0.5 * i, 10 - 0.2 * i, 4e-4, 1000)).ToList();

    [Fact]
    public void LossPlotIsWellFormedSvgWithBothSeriesAndTheTopAxis()
    {
        var evaluations = Curve(18);
        string svg = TrainingPlots.LossPlot(evaluations, tokensPerEpoch: 9 * 512).Render();
        var doc = XDocument.Parse(svg); // throws when not well-formed XML
        XNamespace ns = "http://www.w3.org/2000/svg";
        Assert.Equal(ns + "svg", doc.Root!.Name);
        var series = doc.Descendants(ns + "path").Where(p => (string?)p.Attribute("class") == "series").ToList();
        Assert.Equal(["Training loss", "Validation loss"], series.Select(p => (string)p.Attribute("data-label")!));
        Assert.All(series, p => Assert.Equal(18, ((string)p.Attribute("d")!).Split(' ').Length));
        Assert.Null(series[0].Attribute("stroke-dasharray"));                       // solid training line
        Assert.Equal(TrainingPlots.DashDot, (string?)series[1].Attribute("stroke-dasharray")); // dash-dot validation
        var texts = doc.Descendants(ns + "text").Select(t => t.Value).ToList();
        Assert.Contains("Epochs", texts);
        Assert.Contains("Tokens seen", texts);
        Assert.Contains("Loss", texts);
        Assert.Contains("Training loss", texts);
        Assert.Contains("Validation loss", texts);
        // Both plots are inlined in report.html: their element ids must not collide.
        Assert.Contains("id=\"loss-plot-area\"", svg);
        Assert.Contains("id=\"perplexity-plot-area\"", TrainingPlots.PerplexityPlot(evaluations, 9 * 512).Render());
    }

    [Fact]
    public void PerplexityPlotAndEmptyPlotsRender()
    {
        var doc = XDocument.Parse(TrainingPlots.PerplexityPlot(Curve(5), 4096).Render());
        Assert.Contains(doc.Descendants().Select(e => e.Value), v => v == "Perplexity");
        XDocument.Parse(TrainingPlots.LossPlot([], 4096).Render());
        XDocument.Parse(TrainingPlots.LossPlot(Curve(1), 4096).Render());
    }

    [Fact]
    public void NiceTicksAreRound()
    {
        Assert.Equal([0, 2, 4, 6, 8, 10], SvgLineChart.NiceTicks(0, 10, 6));
        Assert.Equal([0, 0.5, 1, 1.5, 2, 2.5], SvgLineChart.NiceTicks(0.1, 2.4, 6));
    }

    [Fact]
    public void RunConfigRoundTripsThroughJson()
    {
        var config = new RunConfig
        {
            Model = GptConfig.Book124M with { ContextLength = 12, EmbeddingDim = 32, Heads = 4, Layers = 2 },
            Training = new TrainingOptions { Epochs = 3, MaxSteps = 7, MinLr = 1e-6, WarmupSteps = 2, GradClip = 1, GradAccum = 2 },
            Data = "corpus/*.txt",
            BatchSize = 4,
            Stride = 6,
            Seed = 42,
            Rng = "fast",
        };
        var back = RunConfig.FromJson(config.ToJson(), "config.json");
        Assert.Equal(config, back);
        Assert.Contains("\"emb_dim\": 32", config.ToJson());
        Assert.Throws<InvalidDataException>(() => RunConfig.FromJson("{\"model\": {\"emb_dimm\": 3}, \"training\": {}}", "x.json"));
    }
}
