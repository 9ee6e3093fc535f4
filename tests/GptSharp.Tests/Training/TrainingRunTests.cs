using System.Text.Json;
using GptSharp.Checkpoints;
using GptSharp.Data;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Training;
using GptSharp.Randomness;

namespace GptSharp.Tests.Training;

public sealed class TrainingRunTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-run-" + Guid.NewGuid().ToString("N"));

    public TrainingRunTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly GptConfig Tiny = GptConfig.Book124M with { ContextLength = 12, EmbeddingDim = 16, Heads = 2, Layers = 1 };

    /// <summary>A short text (about 30 training batches of 2 x 12) so a run takes well under a second.</summary>
    private string SmallCorpus()
    {
        string path = Path.Combine(_dir, "small.txt");
        if (!File.Exists(path)) File.WriteAllText(path, TextCorpus.TheVerdict()[..4000]);
        return path;
    }

    private RunConfig Config(TrainingOptions? training = null, double lr = 5e-4) => new()
    {
        Model = Tiny,
        Training = training ?? new TrainingOptions { Epochs = 1, EvalFreq = 2, EvalIter = 1, SampleTokens = 3 },
        Data = SmallCorpus(),
        BatchSize = 2,
        Stride = 12,
        LearningRate = lr,
    };

    private string RunDir(string name) => Path.Combine(_dir, name);

    [Fact]
    public void PeriodicCheckpointsKeepTheLastKAndTheBestModel()
    {
        var lines = new List<string>();
        using (var run = TrainingRun.Start(Config(new TrainingOptions { Epochs = 1, MaxSteps = 7, EvalFreq = 2, EvalIter = 1 }),
                   new TrainingRunOptions { Directory = RunDir("a"), SaveEverySteps = 2, KeepLast = 2 }))
        {
            run.Output += lines.Add;
            Assert.Equal(TrainingOutcome.MaxStepsReached, run.Train());
            Assert.Equal(Path.Combine(run.RunDirectory.Path, TrainingCheckpoint.FileNameFor(7)), run.LastCheckpoint);
            var t = run.Timings;
            Assert.True(t.Steps > TimeSpan.Zero && t.Evaluations > TimeSpan.Zero && t.Checkpoints > TimeSpan.Zero && t.InitialLosses > TimeSpan.Zero);
            Assert.True(t.Other >= TimeSpan.Zero, t.Describe());
            Assert.Equal(7 * 2 * 12, t.Tokens);
        }
        string dir = RunDir("a");
        // Written after 2, 4, 6 and 7 steps; the last two are kept.
        Assert.Equal([TrainingCheckpoint.FileNameFor(7), TrainingCheckpoint.FileNameFor(6)], TrainingCheckpointFile.List(dir).Select(Path.GetFileName));
        Assert.Contains(lines, l => l.StartsWith("Training loss: ", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("Ep 1 (Step 000006): Train loss", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("Where the time went", StringComparison.Ordinal));

        // best.safetensors: a model file with the weights of the lowest validation loss.
        using (var best = GptModel.Load(Path.Combine(dir, TrainingRun.BestModelFile)))
            Assert.Equal(Tiny, best.Config);
        using var timings = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, TrainingRun.TimingsFile)));
        Assert.True(timings.RootElement.GetProperty("steps_s").GetDouble() > 0);
        Assert.True(timings.RootElement.GetProperty("step_tokens_per_s").GetDouble() > 0);
    }

    [Fact]
    public void OneProcessAtATimeTrainsInARunDirectory()
    {
        var options = new TrainingRunOptions { Directory = RunDir("locked") };
        using (var first = TrainingRun.Start(Config(), options))
        {
            Assert.True(first.RunDirectory.IsTrainingNow);
            var e = Assert.Throws<IOException>(() => TrainingRun.Start(Config(), options).Dispose());
            Assert.Contains("another process is training in this run directory", e.Message, StringComparison.Ordinal);
            first.Train();
        }
        Assert.False(new RunDirectory(RunDir("locked")).IsTrainingNow);
        using var resumed = TrainingRun.Resume(RunDir("locked"), new TrainingRunOptions { Epochs = 2 });
        Assert.True(resumed.RunDirectory.IsTrainingNow);
    }

    [Fact]
    public void BestModelHoldsTheWeightsOfTheLowestValidationLoss()
    {
        // A high learning rate so the validation loss goes down and then up: the best is not the last model.
        var evaluations = new List<(double ValLoss, float[] Weights)>();
        float[] final;
        using (var run = TrainingRun.Start(Config(new TrainingOptions { Epochs = 3, EvalFreq = 2, EvalIter = 1, SampleTokens = 3 }, lr: 2e-2),
                   new TrainingRunOptions { Directory = RunDir("best") }))
        {
            run.Trainer.Evaluated += e => evaluations.Add((e.ValLoss, run.Model.Parameters().SelectMany(p => p.Value.ToArray()).ToArray()));
            run.Train();
            final = run.Model.Parameters().SelectMany(p => p.Value.ToArray()).ToArray();
        }
        var lowest = evaluations.MinBy(e => e.ValLoss);
        Assert.NotEqual(final, lowest.Weights);
        using var best = GptModel.Load(Path.Combine(RunDir("best"), TrainingRun.BestModelFile));
        Assert.Equal(lowest.Weights, best.Parameters().SelectMany(p => p.Value.ToArray()).ToArray());
        using var model = GptModel.Load(Path.Combine(RunDir("best"), RunDirectory.ModelFile));
        Assert.Equal(final, model.Parameters().SelectMany(p => p.Value.ToArray()).ToArray());
    }

    [Fact]
    public void CancellationStopsAtAStepBoundaryAndResumeMatchesAnUninterruptedRun()
    {
        var options = new TrainingOptions { Epochs = 2, EvalFreq = 3, EvalIter = 1, SampleTokens = 3 };
        float[] straight;
        using (var run = TrainingRun.Start(Config(options), new TrainingRunOptions { Directory = RunDir("straight") }))
        {
            Assert.Equal(TrainingOutcome.Completed, run.Train());
            straight = run.Model.Parameters().SelectMany(p => p.Value.ToArray()).ToArray();
        }

        using (var cancel = new CancellationTokenSource())
        using (var run = TrainingRun.Start(Config(options), new TrainingRunOptions { Directory = RunDir("stopped") }))
        {
            run.Trainer.StepCompleted += p => { if (p.Step == 4) cancel.Cancel(); };
            Assert.Equal(TrainingOutcome.Stopped, run.Train(cancel.Token));
            Assert.Equal(4, run.State.GlobalStep);
        }
        using (var resumed = TrainingRun.Resume(RunDir("stopped")))
        {
            Assert.True(resumed.IsResumed);
            Assert.Equal(TrainingOutcome.Completed, resumed.Train());
            Assert.Equal(straight, resumed.Model.Parameters().SelectMany(p => p.Value.ToArray()).ToArray());
        }
    }

    [Fact]
    public void ResumeSkipsIncompleteCheckpointsAndRemovesLeftoverTemporaryFiles()
    {
        string dir = RunDir("r");
        using (var run = TrainingRun.Start(Config(new TrainingOptions { Epochs = 1, MaxSteps = 4, EvalFreq = 2, EvalIter = 1 }),
                   new TrainingRunOptions { Directory = dir, SaveEverySteps = 2, KeepLast = 3 }))
            run.Train();
        // A newer checkpoint cut short (as a copy interrupted by a crash would be) and a temporary file of a killed write.
        string complete = Path.Combine(dir, TrainingCheckpoint.FileNameFor(4));
        string truncated = Path.Combine(dir, TrainingCheckpoint.FileNameFor(9));
        byte[] bytes = File.ReadAllBytes(complete);
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        string leftover = Path.Combine(dir, $".{TrainingCheckpoint.FileNameFor(5)}.{Guid.NewGuid():N}.tmp");
        File.WriteAllBytes(leftover, bytes[..100]);

        Assert.Equal(complete, TrainingCheckpoint.Latest(dir));
        using var resumed = TrainingRun.Resume(dir, new TrainingRunOptions { MaxSteps = 5 });
        Assert.False(File.Exists(leftover));
        Assert.Equal(3, resumed.State.GlobalStep);
    }

    [Fact]
    public void OnlyTheTemporaryFilesOfAtomicWritesAreRemoved()
    {
        string dir = RunDir("tmp");
        Directory.CreateDirectory(dir);
        string leftover = Path.Combine(dir, $".metrics.csv.{Guid.NewGuid():N}.tmp");
        string[] kept = [Path.Combine(dir, ".notes.tmp"), Path.Combine(dir, "a.tmp"), Path.Combine(dir, $".x.{Guid.NewGuid():N}.tmp.bak")];
        foreach (var f in kept.Append(leftover)) File.WriteAllText(f, "x");
        Assert.Equal([Path.GetFileName(leftover)], GptSharp.IO.AtomicFile.RemoveLeftovers(dir));
        Assert.All(kept, f => Assert.True(File.Exists(f)));
    }

    [Fact]
    public void ACheckpointConvertedToACheckpointStillResumes()
    {
        string dir = RunDir("c");
        using (var run = TrainingRun.Start(Config(new TrainingOptions { Epochs = 1, MaxSteps = 3, EvalFreq = 2, EvalIter = 1 }), new TrainingRunOptions { Directory = dir }))
            run.Train();
        string copyDir = RunDir("copy");
        Directory.CreateDirectory(copyDir);
        string copy = Path.Combine(copyDir, TrainingCheckpoint.FileNameFor(3));
        using (var loaded = ModelStore.Open(TrainingCheckpoint.Latest(dir)!))
            ModelConverter.Write(loaded, copy, ModelConverter.ResolveFormat(copy, null));
        using var resumed = TrainingRun.Resume(copyDir, new TrainingRunOptions { MaxSteps = 4 });
        Assert.Equal(2, resumed.State.GlobalStep);
        Assert.Equal(TrainingOutcome.MaxStepsReached, resumed.Train());
        Assert.Equal(3, resumed.State.GlobalStep);
    }

    [Fact]
    public void AModelFileGivenToResumePointsToInitFrom()
    {
        string dir = RunDir("m");
        using (var run = TrainingRun.Start(Config(new TrainingOptions { Epochs = 1, MaxSteps = 1, EvalFreq = 5, EvalIter = 1 }), new TrainingRunOptions { Directory = dir }))
            run.Train();
        string model = Path.Combine(dir, RunDirectory.ModelFile);
        var e = Assert.Throws<InvalidDataException>(() => TrainingRun.Resume(model));
        Assert.Contains("RunConfig.InitFrom", e.Message);
        Assert.Contains("RunConfig.InitFrom", Assert.Throws<FileNotFoundException>(() => TrainingRun.Resume(_dir)).Message);
    }

    [Fact]
    public void AFailedMetricsWriteStopsWithOneLineAfterALastCheckpoint()
    {
        string dir = RunDir("full");
        Directory.CreateDirectory(Path.Combine(dir, RunDirectory.MetricsFile)); // metrics.csv cannot be replaced: a directory is in the way
        using var run = TrainingRun.Start(Config(), new TrainingRunOptions { Directory = dir });
        var e = Assert.Throws<IOException>(() => run.Train());
        Assert.Contains("metrics", e.Message);
        Assert.Contains("resume the run from", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        // The first evaluation comes after step 0: the checkpoint holds that one step.
        Assert.Equal(Path.Combine(run.RunDirectory.Path, TrainingCheckpoint.FileNameFor(1)), TrainingCheckpoint.Latest(dir));
    }

    [Fact]
    public void ADivergedLossWritesACheckpointOfTheLastGoodStep()
    {
        string dir = RunDir("nan");
        using var run = TrainingRun.Start(Config(lr: 1e30), new TrainingRunOptions { Directory = dir });
        Assert.Throws<TrainingDivergedException>(() => run.Train());
        string? latest = TrainingCheckpoint.Latest(dir);
        Assert.NotNull(latest);
        using var checkpoint = TrainingCheckpoint.Load(latest);
        Assert.Equal(checkpoint.State.GlobalStep + 1, checkpoint.Optimizer.StepCount);
        Assert.Equal(checkpoint.State.TokensSeen, (checkpoint.State.GlobalStep + 1) * 2 * 12);
    }
}

public sealed class TrainingRunInitFromTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-init-" + Guid.NewGuid().ToString("N"));

    public TrainingRunInitFromTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly GptConfig Wide = GptConfig.Book124M with { ContextLength = 64, EmbeddingDim = 8, Heads = 2, Layers = 1 };

    private RunConfig Config(GptConfig model, string initFrom) => new()
    {
        Model = model,
        Training = new TrainingOptions { Epochs = 1, MaxSteps = 2, EvalFreq = 5, EvalIter = 1 },
        Data = WriteCorpus(),
        BatchSize = 2,
        Stride = model.ContextLength,
        InitFrom = initFrom,
    };

    private string WriteCorpus()
    {
        string path = Path.Combine(_dir, "small.txt");
        if (!File.Exists(path)) File.WriteAllText(path, TextCorpus.TheVerdict()[..4000]);
        return path;
    }

    [Fact]
    public void StartsFromAModelFileWithAShorterPositionalTable()
    {
        string weights = Path.Combine(_dir, "wide.safetensors");
        using (var source = new GptModel(Wide, new FastRandom(3)))
            source.Save(weights);
        Assert.Equal(Wide, GptConfig.FromCheckpoint(weights));
        var shorter = Wide with { ContextLength = 16 };
        using var run = TrainingRun.Start(Config(shorter, weights), new TrainingRunOptions { Directory = Path.Combine(_dir, "run") });
        using var source2 = GptModel.Load(weights);
        Assert.Equal(shorter, run.Model.Config);
        Assert.Equal(source2.PositionEmbedding.Value.Span[..(16 * 8)].ToArray(), run.Model.PositionEmbedding.Value.ToArray());
        Assert.Equal(source2.Parameters()[^1].Value.ToArray(), run.Model.Parameters()[^1].Value.ToArray());
        Assert.Equal(0, run.Optimizer.StepCount);
        var lines = new List<string>();
        run.Output += lines.Add;
        run.Train();
        Assert.Contains(lines, l => l.Contains("positional table cut from 64 to 16", StringComparison.Ordinal));
        Assert.Contains("\"init_from\"", File.ReadAllText(Path.Combine(_dir, "run", RunDirectory.ConfigFile)));

        // Another shape, or a longer context than the weights have, is refused in one line.
        Assert.Contains("must match", Assert.Throws<ArgumentException>(() => TrainingRun.Start(Config(Wide with { Layers = 2 }, weights))).Message);
        Assert.Contains("at most 64", Assert.Throws<ArgumentException>(() => TrainingRun.Start(Config(Wide with { ContextLength = 128 }, weights))).Message);
    }

    [Fact]
    public void ModelAndOptimizerPthRestoresAdamW()
    {
        // The book's exercise 5.4 file: torch.save({"model_state_dict": ..., "optimizer_state_dict": ...}).
        string pth = Path.Combine(_dir, "model_and_optimizer.pth");
        File.WriteAllText(Path.Combine(_dir, "config.json"), Wide.ToJson());
        using (var model = new GptModel(Wide, new FastRandom(4)))
        using (var optimizer = new AdamW(model.Parameters(), 5e-4f, 0.1f))
        {
            foreach (var p in model.Parameters()) p.Grad.Span.Fill(0.01f);
            optimizer.Step();
            optimizer.Step();
            PthModelFile.Save(model, optimizer, pth);
        }
        using var run = TrainingRun.Start(Config(Wide, pth), new TrainingRunOptions { Directory = Path.Combine(_dir, "run") });
        Assert.Equal(2, run.Optimizer.StepCount);
        Assert.Equal(5e-4f, run.Optimizer.LearningRate);
        Assert.Equal((double)5e-4f, run.Config.LearningRate);
        Assert.Contains(run.Optimizer.ExpAvg[0].Span.ToArray(), v => v != 0);
        run.Train();
        Assert.Equal(4, run.Optimizer.StepCount);
    }
}
