using GptSharp.Data;
using GptSharp.Model;
using GptSharp.Training;

namespace GptSharp.Tests.Training;

/// <summary>
/// Training on llm.c shards given by a glob with a separate validation shard: the run reads them directly, its checkpoints
/// record where in which shard the next window starts, a stopped run resumes bit for bit, and a resume on changed shards is refused.
/// </summary>
public sealed class ShardedTrainingTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-shards-" + Guid.NewGuid().ToString("N"));

    public ShardedTrainingTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly GptConfig Tiny = GptConfig.Book124M with { ContextLength = 12, EmbeddingDim = 16, Heads = 2, Layers = 1 };

    /// <summary>About 1,000 tokens of The Verdict as llm.c shards of 300: d_val_000000.bin and three or four train shards.</summary>
    private (string Train, string Validation) Shards()
    {
        string text = Path.Combine(_dir, "verdict.jsonl");
        var lines = TextCorpus.TheVerdict()[..4400].Split("\n\n").Select(p => System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = p }));
        File.WriteAllLines(text, lines);
        CorpusPreparation.Prepare([text], Path.Combine(_dir, "d"), new PreparationOptions { Format = PreparedFormat.Llmc, ShardTokens = 300 });
        return (Path.Combine(_dir, "d_train_*.bin"), Path.Combine(_dir, "d_val_000000.bin"));
    }

    private RunConfig Config(string train, string validation) => new()
    {
        Model = Tiny,
        Training = new TrainingOptions { Epochs = 2, EvalFreq = 4, EvalIter = 1, SampleTokens = 2 },
        Data = train,
        ValidationData = validation,
        BatchSize = 2,
        Stride = 12,
        LearningRate = 5e-4,
    };

    private static float[] Weights(TrainingRun run) => run.Model.Parameters().SelectMany(p => p.Value.ToArray()).ToArray();

    [Fact]
    public void AStoppedRunOnShardsResumesBitForBitFromTheRecordedPosition()
    {
        var (train, validation) = Shards();
        var trainFiles = TextCorpus.ResolveFiles(train);
        Assert.True(trainFiles.Count >= 3, string.Join(", ", trainFiles));
        var config = Config(train, validation);

        float[] straight;
        using (var run = TrainingRun.Start(config, new TrainingRunOptions { Directory = Path.Combine(_dir, "straight") }))
        {
            Assert.Equal(300, run.Loaders.Validation.Dataset.Tokens.Count); // the validation shard, not a 90/10 split
            Assert.Equal(trainFiles.Sum(f => new FileInfo(f).Length - 1024) / 2, run.Loaders.Train.Dataset.Tokens.Count);
            Assert.Equal(TrainingOutcome.Completed, run.Train());
            straight = Weights(run);
        }

        string stopped = Path.Combine(_dir, "stopped");
        long stopAt = 0;
        using (var cancel = new CancellationTokenSource())
        using (var run = TrainingRun.Start(config, new TrainingRunOptions { Directory = stopped }))
        {
            stopAt = run.Trainer.TotalSteps * 3 / 4; // in the second epoch
            run.Trainer.StepCompleted += p => { if (p.Step == stopAt) cancel.Cancel(); };
            Assert.Equal(TrainingOutcome.Stopped, run.Train(cancel.Token));
            var position = run.State.DataPosition!;
            Assert.Contains(position.File, trainFiles.Select(Path.GetFileName));
            // The window starts at a multiple of the stride in the shards read as one run of ids.
            long before = trainFiles.TakeWhile(f => Path.GetFileName(f) != position.File).Sum(f => (new FileInfo(f).Length - 1024) / 2);
            Assert.Equal(0, (before + position.Offset) % 12);
            Assert.NotNull(run.State.DataFingerprint);
            Assert.Contains("d_val_000000.bin (300 tokens)", run.State.DataFingerprint);
        }

        var lines = new List<string>();
        using (var resumed = TrainingRun.Resume(stopped))
        {
            resumed.Output += lines.Add;
            Assert.Equal(TrainingOutcome.Completed, resumed.Train());
            Assert.Equal(straight, Weights(resumed));
        }
        Assert.Contains(lines, l => l.Contains("next window at d_train_", StringComparison.Ordinal));

        // The checkpoint's position and files are checked: a resume over other shards is refused with one clear line.
        string again = Path.Combine(_dir, "again");
        using (var cancel = new CancellationTokenSource())
        using (var run = TrainingRun.Start(config, new TrainingRunOptions { Directory = again }))
        {
            run.Trainer.StepCompleted += p => { if (p.Step == 3) cancel.Cancel(); };
            run.Train(cancel.Token);
        }
        File.Delete(trainFiles[^1]);
        var e = Assert.Throws<InvalidDataException>(() => TrainingRun.Resume(again).Dispose());
        Assert.Contains("TrainingRun.Resume: the data is not what the run trained on", e.Message);
    }

    [Fact]
    public void TheTrainCommandMapsTheDataFlags()
    {
        var settings = GptSharp.Cli.Commands.TrainCommand.Parse("--data", "a/*_train_*.bin", "--val-data", "a/x_val_000000.bin", "--text-column", "content", "--text-field", "body");
        Assert.Equal(Path.GetFullPath("a/x_val_000000.bin"), settings.Config.ValidationData);
        Assert.Equal("content", settings.Config.Read.TextColumn);
        Assert.Equal("body", settings.Config.Read.TextField);
        var back = RunConfig.FromJson(settings.Config.ToJson(), "config.json");
        Assert.Equal(settings.Config.ValidationData, back.ValidationData);
        Assert.Equal(settings.Config.Read, back.Read);
        // The book's run keeps its config.json as it was.
        Assert.DoesNotContain("validation_data", GptSharp.Cli.Commands.TrainCommand.Parse().Config.ToJson());
    }
}
