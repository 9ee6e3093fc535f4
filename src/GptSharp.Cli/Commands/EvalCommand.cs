using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Evaluation;
using GptSharp.Model;
using GptSharp.Tokenization;
using GptSharp.Training;
using Spectre.Console;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp eval --model M --data F</c>: the book's <c>calc_loss_loader</c> on the training and validation
/// split of the data (90/10, as in chapter 5), printed as loss and perplexity. M is anything <c>generate</c> takes,
/// so <c>gptsharp eval --model gpt2-small</c> is exercise 5.5 (the book reports ≈ 3.75 / 3.56 on The Verdict). The loaders
/// are the chapter's: windows of 256 tokens with stride 256, batches of 2 (a model with a shorter context uses its own).
/// <c>gptsharp eval --model M --task hellaswag|lambada FILE.jsonl</c> runs a benchmark instead (<see cref="BenchmarkTask"/>).
/// </summary>
internal static class EvalCommand
{
    /// <summary>The context length of chapter 5's loaders (GPT_CONFIG_124M shortened to 256).</summary>
    private const int BookContextLength = 256;

    /// <param name="output">Where results go (standard output when null); tests pass a writer.</param>
    /// <param name="errorOutput">Standard error (when null) or its stand-in: the plain progress lines of a benchmark and the error line.</param>
    public static Command Create(TextWriter? output = null, TextWriter? errorOutput = null)
    {
        var modelOptions = new ModelOptions();
        var dataOption = new Option<string?>("--data") { Description = "Text file, directory or glob of .txt files, or a token file (default: the bundled The Verdict)." };
        var contextOption = new Option<int?>("--context-length") { Description = "Window length and stride (default: 256 as the book's loaders, or the model's context length when shorter)." };
        var batchOption = new Option<int?>("--batch-size") { Description = "Sequences per batch (default 2 for the loss, as the book; 8 for a --task)." };
        var batchesOption = new Option<int?>("--batches") { Description = "Evaluate only the first N batches of each split (default: all, as the book)." };
        var threadsOption = new Option<int?>("--threads") { Description = "Worker threads (default: all cores)." };
        var taskOption = new Option<string?>("--task") { Description = "Run a benchmark on FILE instead: hellaswag (the official jsonl: ctx, endings, label) or lambada (one {\"text\": ...} per line)." };
        taskOption.AcceptOnlyFromAmong([.. BenchmarkTask.Names]);
        var fileArgument = new Argument<string?>("file") { Description = "The --task's examples (.jsonl).", Arity = ArgumentArity.ZeroOrOne };
        var limitOption = new Option<int?>("--limit") { Description = "With --task: score only the first N examples." };
        var jsonOption = new Option<bool>("--json") { Description = "With --task: print the metrics as JSON under lm-evaluation-harness's names (acc, acc_norm, perplexity; fractions)." };
        var command = new Command("eval", "Loss and perplexity of a model on the training and validation split of a text (chapter 5's calc_loss_loader), or a benchmark: --task hellaswag|lambada FILE.");
        modelOptions.AddTo(command);
        foreach (var o in new Option[] { dataOption, contextOption, batchOption, batchesOption, threadsOption, taskOption, limitOption, jsonOption }) command.Options.Add(o);
        command.Arguments.Add(fileArgument);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var writer = output ?? Console.Out;
            int? threads = parse.GetValue(threadsOption);
            if (threads is < 1) throw new ArgumentException($"--threads must be at least 1, got {threads}.");
            if (threads is int t) Tensors.Workers.Count = t;
            int? batchSize = parse.GetValue(batchOption);
            if (batchSize is < 1) throw new ArgumentException($"--batch-size must be at least 1, got {batchSize}.");
            if (parse.GetValue(taskOption) is string task)
            {
                foreach (var option in new Option[] { dataOption, contextOption, batchesOption })
                    if (parse.GetResult(option) is { Implicit: false })
                        throw new ArgumentException($"{option.Name} is for the loss evaluation; --task scores the examples of FILE.");
                string file = parse.GetValue(fileArgument) ?? throw new ArgumentException($"--task {task} needs the task's file: gptsharp eval --model M --task {task} FILE.jsonl");
                var benchmark = BenchmarkTask.Load(task, file, parse.GetValue(limitOption));
                using var taskModel = modelOptions.Load(parse);
                var options = new BenchmarkOptions { BatchSize = batchSize ?? new BenchmarkOptions().BatchSize };
                bool live = output is null && errorOutput is null && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
                var result = live ? RunWithProgressBar(benchmark, taskModel, options) : RunWithProgressLines(benchmark, taskModel, options, errorOutput ?? Console.Error);
                if (parse.GetValue(jsonOption)) writer.WriteLine(Json(result, parse.GetValue(modelOptions.Model) ?? parse.GetValue(modelOptions.ModelDir), parse.GetValue(limitOption), options));
                else writer.WriteLine(result.Describe());
                return 0;
            }
            if (parse.GetValue(fileArgument) is string stray)
                throw new ArgumentException($"unexpected argument '{stray}': a task file goes with --task hellaswag|lambada; the loss evaluation reads --data.");
            foreach (var option in new Option[] { limitOption, jsonOption })
                if (parse.GetResult(option) is { Implicit: false })
                    throw new ArgumentException($"{option.Name} goes with --task.");
            using var model = modelOptions.Load(parse);
            // The book's loaders use GPT_CONFIG_124M's 256 even for GPT-2 (1024): The Verdict's validation split has only 534 tokens.
            int contextLength = parse.GetValue(contextOption) ?? Math.Min(BookContextLength, model.Config.ContextLength);
            if (contextLength < 1 || contextLength > model.Config.ContextLength)
                throw new ArgumentException($"--context-length must be between 1 and the model's {model.Config.ContextLength}, got {contextLength}.");
            int? batches = parse.GetValue(batchesOption);
            if (batches is < 1) throw new ArgumentException($"--batches must be positive, got {batches}.");
            using var data = TrainingData.Load(parse.GetValue(dataOption), 0.9, Gpt2Tokenizer.Instance);
            var loaders = DataLoaders.CreateTrainValidation(data.Train, data.Validation, batchSize ?? 2, contextLength, contextLength, generator: null, shuffleTraining: false);
            var train = loaders.Train;
            writer.WriteLine($"Data: {data.Description}");
            model.Eval();
            double trainLoss = Pretraining.CalcLossLoader(train, model, batches);
            double valLoss = Pretraining.CalcLossLoader(loaders.Validation, model, batches);
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Training loss: {trainLoss:F5}, perplexity {Pretraining.Perplexity(trainLoss):F2} ({Math.Min(batches ?? int.MaxValue, train.Count)} batches)"));
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Validation loss: {valLoss:F5}, perplexity {Pretraining.Perplexity(valLoss):F2} ({Math.Min(batches ?? int.MaxValue, loaders.Validation.Count)} batches)"));
            return 0;
        }, errorOutput));
        return command;
    }

    private static BenchmarkResult RunWithProgressBar(BenchmarkTask benchmark, GptModel model, BenchmarkOptions options)
    {
        BenchmarkResult? result = null;
        LiveProgress.Run(context =>
            {
                var bar = context.AddTask(benchmark.Name, maxValue: benchmark.Count);
                result = benchmark.Evaluate(model, options, p =>
                {
                    bar.Value = p.Done;
                    bar.Description = $"{benchmark.Name} {p.Done}/{p.Total} examples";
                    context.Refresh();
                });
            });
        return result!;
    }

    /// <summary>Plain lines for logs and pipes: every 10 % of the examples, with the rate and the time left.</summary>
    private static BenchmarkResult RunWithProgressLines(BenchmarkTask benchmark, GptModel model, BenchmarkOptions options, TextWriter progress)
    {
        var clock = Stopwatch.StartNew();
        int lastDecile = -1;
        progress.WriteLine($"{benchmark.Name}: {benchmark.Count} examples from {Printable.Escape(benchmark.Path)}");
        return benchmark.Evaluate(model, options, p =>
        {
            int decile = p.Total == 0 ? 10 : p.Done * 10 / p.Total;
            if (p.Done == 0 || decile <= lastDecile) return;
            lastDecile = decile;
            double rate = p.Done / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
            var eta = TimeSpan.FromSeconds(Math.Round((p.Total - p.Done) / Math.Max(rate, 1e-9)));
            progress.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{benchmark.Name}: {p.Done}/{p.Total} examples ({100.0 * p.Done / p.Total:F0}%), {rate:F1} examples/s, ETA {eta:g}"));
        });
    }

    /// <summary>The result as lm-evaluation-harness lays it out: <c>{"results": {"hellaswag": {"acc": ..., "acc_stderr": ..., ...}}}</c>.</summary>
    internal static string Json(BenchmarkResult result, string? model, int? limit, BenchmarkOptions options)
    {
        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            static void Number(Utf8JsonWriter json, string name, double value)
            {
                if (double.IsFinite(value)) json.WriteNumber(name, value);
                else json.WriteNull(name);
            }
            json.WriteStartObject();
            json.WriteStartObject("results");
            json.WriteStartObject(result.Task);
            foreach (var metric in result.Metrics)
            {
                Number(json, metric.Name, metric.Value);
                // Accuracies are means of 0/1 outcomes: their standard error as the harness computes it.
                if (metric.Name.StartsWith("acc", StringComparison.Ordinal)) Number(json, metric.Name + "_stderr", result.AccuracyStandardError(metric.Value));
            }
            json.WriteEndObject();
            json.WriteEndObject();
            json.WriteStartObject("n-samples");
            json.WriteStartObject(result.Task);
            json.WriteNumber("effective", result.Count);
            json.WriteEndObject();
            json.WriteEndObject();
            json.WriteStartObject("config");
            json.WriteString("model", model);
            if (limit is int l) json.WriteNumber("limit", l);
            else json.WriteNull("limit");
            json.WriteNumber("batch_size", options.BatchSize);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }
}
