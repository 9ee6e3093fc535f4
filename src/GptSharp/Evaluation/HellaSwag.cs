using System.Text.Json;
using GptSharp.Model;

namespace GptSharp.Evaluation;

/// <summary>One HellaSwag example: a context, its candidate endings and the index of the right one.</summary>
internal sealed record HellaSwagExample(string Context, IReadOnlyList<string> Endings, int Label);

/// <summary>
/// What the model made of one HellaSwag example: per ending, the summed and mean loss of its tokens, and the ending
/// each rule picks (the lowest summed loss for <c>acc</c>, the lowest mean loss for <c>acc_norm</c>; the first on ties).
/// </summary>
internal sealed record HellaSwagScore(int Label, IReadOnlyList<ContinuationScore> Endings)
{
    public int Predicted { get; } = ArgMin(Endings, e => e.Loss);
    public int PredictedNorm { get; } = ArgMin(Endings, e => e.MeanLoss);

    private static int ArgMin(IReadOnlyList<ContinuationScore> endings, Func<ContinuationScore, double> key)
    {
        int best = 0;
        for (int i = 1; i < endings.Count; i++)
            if (key(endings[i]) < key(endings[best])) best = i;
        return best;
    }
}

/// <summary>HellaSwag's accuracies over the examples scored, and each example's scores.</summary>
internal sealed class HellaSwagResult(IReadOnlyList<HellaSwagScore> examples) : BenchmarkResult
{
    public override string Task => HellaSwag.TaskName;
    public override int Count => Examples.Count;
    public IReadOnlyList<HellaSwagScore> Examples { get; } = examples;

    /// <summary>The fraction of examples whose ending of lowest summed loss is the labelled one.</summary>
    public double Accuracy { get; } = examples.Count == 0 ? double.NaN : examples.Count(e => e.Predicted == e.Label) / (double)examples.Count;

    /// <summary>The same with the mean loss per token (llm.c's acc_norm; GPT-2 124M scores about 0.2955 on the validation split).</summary>
    public double AccuracyNorm { get; } = examples.Count == 0 ? double.NaN : examples.Count(e => e.PredictedNorm == e.Label) / (double)examples.Count;

    public override IReadOnlyList<BenchmarkMetric> Metrics => [new("acc", Accuracy), new("acc_norm", AccuracyNorm)];
}

/// <summary>
/// HellaSwag (Zellers et al., 2019), scored as llm.c's <c>dev/data/hellaswag.py</c> does (completion style): for each
/// ending, the tokens of the context followed by those of <c>" " + ending</c>, and the cross-entropy of the ending's tokens
/// given everything before them. <c>acc</c> picks the ending of lowest summed loss, <c>acc_norm</c> the lowest mean loss per
/// token. The file is the official jsonl (<c>hellaswag_val.jsonl</c>): one object per line with <c>ctx</c>, <c>endings</c>
/// and <c>label</c> (the test split has no labels).
/// </summary>
internal sealed class HellaSwag : BenchmarkTask
{
    public const string TaskName = "hellaswag";

    private readonly List<int> _lines;
    private readonly List<int[]> _contexts;
    private readonly List<int[][]> _endings;

    private HellaSwag(string path, List<HellaSwagExample> examples, List<int> lines) : base(path)
    {
        Examples = examples;
        _lines = lines;
        _contexts = examples.Select(e => Encode(e.Context)).ToList();
        // The leading space: GPT-2's tokenizer attaches a word's space to the word that follows it.
        _endings = examples.Select(e => e.Endings.Select(end => Encode(" " + end)).ToArray()).ToList();
    }

    public override string Name => TaskName;
    public override int Count => Examples.Count;
    public IReadOnlyList<HellaSwagExample> Examples { get; }

    internal static HellaSwag Read(string path, int? limit)
    {
        var examples = new List<HellaSwagExample>();
        var lines = new List<int>();
        foreach (var (line, record) in ReadJsonLines(path, limit))
        {
            string context = StringField(record, "ctx", path, line);
            if (!record.TryGetProperty("endings", out var endingsJson) || endingsJson.ValueKind != JsonValueKind.Array
                || endingsJson.GetArrayLength() < 2 || endingsJson.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
                throw new InvalidDataException($"{path} line {line}: expected \"endings\", an array of at least 2 strings.");
            var endings = endingsJson.EnumerateArray().Select(e => e.GetString()!).ToArray();
            if (!record.TryGetProperty("label", out var labelJson))
                throw new InvalidDataException($"{path} line {line}: no \"label\" (HellaSwag's test split has no labels: use the validation split).");
            // The official files store the label as a number; some mirrors store it as a string.
            int label = labelJson.ValueKind switch
            {
                JsonValueKind.Number when labelJson.TryGetInt32(out int n) => n,
                JsonValueKind.String when int.TryParse(labelJson.GetString(), out int n) => n,
                _ => -1,
            };
            if (label < 0 || label >= endings.Length)
                throw new InvalidDataException($"{path} line {line}: \"label\" must be an ending's index, 0 to {endings.Length - 1}, got {labelJson.GetRawText()}.");
            examples.Add(new HellaSwagExample(context, endings, label));
            lines.Add(line);
        }
        if (examples.Count == 0) throw new InvalidDataException($"{path}: no examples (expected one JSON object per line with \"ctx\", \"endings\" and \"label\").");
        return new HellaSwag(path, examples, lines);
    }

    public override BenchmarkResult Evaluate(GptModel model, BenchmarkOptions? options = null, Action<BenchmarkProgress>? progress = null)
    {
        var requests = new List<ContinuationRequest>();
        var exampleOf = new List<int>();
        for (int i = 0; i < Count; i++)
            foreach (int[] ending in _endings[i])
            {
                requests.Add(new ContinuationRequest(_contexts[i], ending));
                exampleOf.Add(i);
            }
        var scores = Score(model, options, progress, requests, [.. exampleOf], greedy: false, i => $"{Path} line {_lines[i]}");
        var results = new List<HellaSwagScore>(Count);
        for (int i = 0, r = 0; i < Count; r += _endings[i].Length, i++)
            results.Add(new HellaSwagScore(Examples[i].Label, scores.AsSpan(r, _endings[i].Length).ToArray()));
        return new HellaSwagResult(results);
    }
}
