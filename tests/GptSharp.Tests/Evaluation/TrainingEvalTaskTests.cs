using GptSharp.Checkpoints;
using GptSharp.Cli.Commands;
using GptSharp.Data;
using GptSharp.Evaluation;
using GptSharp.Model;
using GptSharp.Training;

namespace GptSharp.Tests.Evaluation;

/// <summary><c>train --eval-task hellaswag:FILE --eval-task-every N</c>: the scores in the state, metrics.csv, the report and checkpoints.</summary>
public sealed class TrainingEvalTaskTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-evaltask-" + Guid.NewGuid().ToString("N"));

    public TrainingEvalTaskTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly GptConfig Tiny = GptConfig.Book124M with { ContextLength = 12, EmbeddingDim = 16, Heads = 2, Layers = 1 };
    private static readonly string HellaSwagFile = FixturePaths.Get("evaluation", "hellaswag-mini.jsonl");

    private RunConfig Config(long maxSteps, int? every, string task = "hellaswag")
    {
        string data = Path.Combine(_dir, "small.txt");
        if (!File.Exists(data)) File.WriteAllText(data, TextCorpus.TheVerdict()[..4000]);
        return new RunConfig
        {
            Model = Tiny,
            Training = new TrainingOptions { Epochs = 1, MaxSteps = maxSteps, EvalFreq = 2, EvalIter = 1, SampleTokens = 3, EvalTask = $"{task}:{FixturePaths.Get("evaluation", $"{task}-mini.jsonl")}", EvalTaskEvery = every },
            Data = data,
            BatchSize = 2,
            Stride = 12,
            LearningRate = 5e-4,
        };
    }

    [Fact]
    public void TheAccuracyGoesIntoMetricsCsvAndTheReportAndMatchesTheFinalModel()
    {
        string dir = Path.Combine(_dir, "a");
        var lines = new List<string>();
        using (var run = TrainingRun.Start(Config(maxSteps: 5, every: 2), new TrainingRunOptions { Directory = dir }))
        {
            run.Output += lines.Add;
            run.Train();
            Assert.Equal([0L, 2L, 4L], run.State.TaskEvaluations.Select(t => t.Step));
        }
        Assert.Contains(lines, l => l.StartsWith("hellaswag (Step 000004): acc ", StringComparison.Ordinal) && l.Contains("(12 examples"));

        var csv = File.ReadAllLines(Path.Combine(dir, RunDirectory.MetricsFile));
        Assert.Equal("step,epoch,tokens_seen,train_loss,val_loss,lr,tokens_per_s,hellaswag_acc,hellaswag_acc_norm", csv[0]);
        Assert.Equal(4, csv.Length);
        // The last evaluation (step 4) saw the final weights: scoring model.safetensors again gives the same accuracies.
        using var model = GptModel.Load(Path.Combine(dir, RunDirectory.ModelFile));
        var result = (HellaSwagResult)BenchmarkTask.Load("hellaswag", HellaSwagFile).Evaluate(model);
        var last = csv[3].Split(',');
        Assert.Equal("4", last[0]);
        Assert.Equal(result.Accuracy, double.Parse(last[7], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(result.AccuracyNorm, double.Parse(last[8], System.Globalization.CultureInfo.InvariantCulture));

        string report = File.ReadAllText(Path.Combine(dir, RunDirectory.ReportFile));
        Assert.Contains("<th>hellaswag acc_norm</th>", report);
        Assert.Contains("Benchmark accuracy", report);
        Assert.Contains("data-label=\"hellaswag acc_norm\"", File.ReadAllText(Path.Combine(dir, RunDirectory.TaskPlotFile)));
    }

    [Fact]
    public void EveryNStepsLeavesTheOtherRowsEmptyAndAResumeKeepsTheScores()
    {
        string dir = Path.Combine(_dir, "b");
        using (var run = TrainingRun.Start(Config(maxSteps: 3, every: 4, task: "lambada"), new TrainingRunOptions { Directory = dir }))
            run.Train();
        using (var resumed = TrainingRun.Resume(dir, new TrainingRunOptions { MaxSteps = 5 }))
        {
            Assert.Equal([0L], resumed.State.TaskEvaluations.Select(t => t.Step));
            resumed.Train();
            Assert.Equal([0L, 4L], resumed.State.TaskEvaluations.Select(t => t.Step));
        }
        var csv = File.ReadAllLines(Path.Combine(dir, RunDirectory.MetricsFile));
        Assert.EndsWith(",lambada_acc,lambada_perplexity", csv[0]);
        Assert.Equal(9, csv[1].Split(',').Length);
        Assert.EndsWith(",,", csv[2]); // step 2: no benchmark
        Assert.StartsWith("2,", csv[2]);
        Assert.False(csv[3].EndsWith(",,", StringComparison.Ordinal));
    }

    [Fact]
    public void TheOptionsAreCheckedAndTheFileMadeAbsolute()
    {
        var settings = TrainCommand.Parse("--eval-task", "hellaswag:some/file.jsonl", "--eval-freq", "5", "--eval-task-every", "50");
        Assert.Equal("hellaswag:" + Path.GetFullPath("some/file.jsonl"), settings.Config.Training.EvalTask);
        Assert.Equal(50, settings.Config.Training.EvalTaskEvery);
        Assert.Contains("multiple of --eval-freq (5)", Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--eval-task", "hellaswag:f", "--eval-task-every", "7")).Message);
        Assert.Contains("needs --eval-task", Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--eval-task-every", "5")).Message);
        Assert.Contains("NAME:FILE", Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--eval-task", "winogrande:f")).Message);
        Assert.Contains("NAME:FILE", Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--eval-task", "hellaswag")).Message);
        // A missing file stops the run before it trains, naming the file.
        var config = Config(maxSteps: 1, every: null) with { Training = Config(1, null).Training with { EvalTask = "hellaswag:" + Path.Combine(_dir, "missing.jsonl") } };
        Assert.Contains("missing.jsonl", Assert.Throws<FileNotFoundException>(() => TrainingRun.Start(config, new TrainingRunOptions { Directory = Path.Combine(_dir, "c") })).Message);
    }
}
