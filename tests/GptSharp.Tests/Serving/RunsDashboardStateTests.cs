using GptSharp.Serving;
using GptSharp.Training;

namespace GptSharp.Tests.Serving;

public sealed class RunsDashboardStateTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-dash-" + Guid.NewGuid().ToString("N"));

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private RunDirectory InProgressRun()
    {
        var run = new RunDirectory(_dir);
        var config = new RunConfig { Model = GptSharp.Model.GptConfig.Book124M with { ContextLength = 8, EmbeddingDim = 16, Heads = 2, Layers = 1 }, Training = new TrainingOptions() };
        run.WriteConfig(config);
        run.WriteProgress(config, new TrainerState(), tokensPerEpoch: 100); // the report says "in progress"
        return run;
    }

    [Fact]
    public void AnInProgressRunIsRunningOnlyWhileAProcessHoldsIt()
    {
        var run = InProgressRun();
        // Nobody holds the directory: the writer was killed before it could write its last status.
        Assert.Equal("stopped", RunsDashboard.ReadRun(_dir).State);
        using (run.TakeForTraining())
            Assert.Equal("running", RunsDashboard.ReadRun(_dir).State);
        Assert.Equal("stopped", RunsDashboard.ReadRun(_dir).State);
    }
}
