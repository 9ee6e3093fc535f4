using System.Globalization;
using System.Text;
using System.Text.Json;
using GptSharp.Model;
using GptSharp.Tokenization;

namespace GptSharp.Evaluation;

/// <summary>How a benchmark runs.</summary>
public sealed record BenchmarkOptions
{
    /// <summary>Sequences per forward pass (a HellaSwag example is 4 of them). Memory grows with it: the logits alone
    /// are batch × longest row × vocabulary floats.</summary>
    public int BatchSize { get; init; } = 8;

    public BenchmarkOptions Validate()
    {
        if (BatchSize < 1) throw new ArgumentException($"BenchmarkOptions.BatchSize must be at least 1, got {BatchSize}.");
        return this;
    }
}

/// <summary>How far a benchmark has got: examples fully scored of the total.</summary>
public readonly record struct BenchmarkProgress(int Done, int Total);

/// <summary>One metric of a result, under lm-evaluation-harness's name (<c>acc</c>, <c>acc_norm</c>, <c>perplexity</c>).</summary>
public readonly record struct BenchmarkMetric(string Name, double Value);

/// <summary>What a benchmark gives: its metrics, as fractions (accuracy) or a perplexity.</summary>
public abstract class BenchmarkResult
{
    /// <summary>The task's name (<c>hellaswag</c>, <c>lambada</c>).</summary>
    public abstract string Task { get; }

    /// <summary>Examples scored.</summary>
    public abstract int Count { get; }

    /// <summary>The metrics under lm-evaluation-harness's names, the headline first.</summary>
    public abstract IReadOnlyList<BenchmarkMetric> Metrics { get; }

    /// <summary>The standard error of an accuracy over <see cref="Count"/> examples, as lm-evaluation-harness reports it
    /// (the sample standard deviation of the 0/1 outcomes over √n).</summary>
    public double AccuracyStandardError(double accuracy) =>
        Count > 1 ? Math.Sqrt(accuracy * (1 - accuracy) * Count / (Count - 1) / Count) : double.NaN;

    /// <summary>One line, e.g. <c>hellaswag: 10042 examples, acc 0.2859, acc_norm 0.2955</c>.</summary>
    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"{Task}: {Count} examples, {string.Join(", ", Metrics.Select(m => $"{m.Name} {m.Value:0.0000}"))}");
}

/// <summary>
/// A benchmark read from its published file: <see cref="HellaSwag"/> (the official jsonl: <c>ctx</c>, <c>endings</c>,
/// <c>label</c>) or <see cref="Lambada"/> (one <c>text</c> per line). Load one with <see cref="Load"/>, run it with
/// <see cref="Evaluate"/>.
/// <code>
/// var task = BenchmarkTask.Load("hellaswag", "hellaswag_val.jsonl");
/// Console.WriteLine(task.Evaluate(model).Describe());
/// </code>
/// </summary>
public abstract class BenchmarkTask
{
    /// <summary>The task names <see cref="Load"/> takes.</summary>
    public static IReadOnlyList<string> Names { get; } = [HellaSwag.TaskName, Lambada.TaskName];

    private protected BenchmarkTask(string path) => Path = path;

    /// <summary>The task's name (<c>hellaswag</c>, <c>lambada</c>).</summary>
    public abstract string Name { get; }

    /// <summary>The file the examples came from.</summary>
    public string Path { get; }

    /// <summary>Examples loaded.</summary>
    public abstract int Count { get; }

    /// <summary>
    /// Reads task <paramref name="name"/> from <paramref name="path"/>, the first <paramref name="limit"/> examples
    /// only when given, each tokenized with the GPT-2 tokenizer. A malformed line stops with one error naming the file and line.
    /// </summary>
    public static BenchmarkTask Load(string name, string path, int? limit = null)
    {
        if (limit is < 1) throw new ArgumentException($"limit must be at least 1, got {limit}.");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such task file.", path);
        return name switch
        {
            HellaSwag.TaskName => HellaSwag.Read(path, limit),
            Lambada.TaskName => Lambada.Read(path, limit),
            _ => throw new ArgumentException($"unknown task '{name}': expected one of {string.Join(", ", Names)}."),
        };
    }

    /// <summary>
    /// <see cref="Load"/> from <c>NAME:FILE</c> (the form of <c>train --eval-task hellaswag:FILE</c>).
    /// </summary>
    public static BenchmarkTask Load(string spec)
    {
        int colon = spec.IndexOf(':');
        if (colon <= 0 || colon == spec.Length - 1)
            throw new ArgumentException($"TrainingOptions.EvalTask '{spec}': expected NAME:FILE with NAME one of {string.Join(", ", Names)} (e.g. hellaswag:hellaswag_val.jsonl).");
        return Load(spec[..colon], spec[(colon + 1)..]);
    }

    /// <summary>
    /// Scores every example with <paramref name="model"/> (in eval mode and without gradients; the mode is restored after),
    /// batched, on all cores (<see cref="Tensors.Workers"/>).
    /// </summary>
    public abstract BenchmarkResult Evaluate(GptModel model, BenchmarkOptions? options = null, Action<BenchmarkProgress>? progress = null);

    /// <summary>The GPT-2 ids of <paramref name="text"/> (special-token text encoded as plain text, as tiktoken's encode_ordinary).</summary>
    private protected static int[] Encode(string text) => Gpt2Tokenizer.Instance.EncodeOrdinary(text);

    /// <summary>The requests of every example, in order, scored in batches; progress counted in examples.</summary>
    private protected ContinuationScore[] Score(GptModel model, BenchmarkOptions? options, Action<BenchmarkProgress>? progress,
        IReadOnlyList<ContinuationRequest> requests, int[] exampleOfRequest, bool greedy, Func<int, string> describeExample)
    {
        options = (options ?? new BenchmarkOptions()).Validate();
        progress?.Invoke(new BenchmarkProgress(0, Count));
        return ContinuationScorer.Score(model, requests, options.BatchSize, greedy,
            done => progress?.Invoke(new BenchmarkProgress(done == requests.Count ? Count : exampleOfRequest[done], Count)),
            i => describeExample(exampleOfRequest[i]));
    }

    /// <summary>
    /// The JSON objects of a JSON Lines file, with their 1-based line numbers (blank lines skipped), the first
    /// <paramref name="limit"/> only when given. A line that is not a JSON object stops with an error naming the file and line.
    /// </summary>
    private protected static IEnumerable<(int Line, JsonElement Record)> ReadJsonLines(string path, int? limit)
    {
        using var reader = new StreamReader(path, new UTF8Encoding(false, throwOnInvalidBytes: true), detectEncodingFromByteOrderMarks: true);
        int lineNumber = 0, yielded = 0;
        while (yielded < (limit ?? int.MaxValue))
        {
            string? line;
            try
            {
                line = reader.ReadLine();
            }
            catch (DecoderFallbackException)
            {
                throw new InvalidDataException($"{path} line {lineNumber + 1}: not valid UTF-8.");
            }
            if (line is null) break;
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonElement record;
            try
            {
                using var document = JsonDocument.Parse(line);
                record = document.RootElement.Clone();
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{path} line {lineNumber}: not valid JSON ({e.Message}).");
            }
            if (record.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{path} line {lineNumber}: expected a JSON object, got {record.ValueKind}.");
            yielded++;
            yield return (lineNumber, record);
        }
    }

    /// <summary>The string field <paramref name="name"/> of a record, or an error naming the file, line and field.</summary>
    private protected static string StringField(JsonElement record, string name, string path, int line) =>
        record.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String
            ? value.GetString()!
            : throw new InvalidDataException($"{path} line {line}: expected a string field \"{name}\".");
}
