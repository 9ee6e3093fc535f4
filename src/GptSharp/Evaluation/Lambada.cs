using GptSharp.Model;

namespace GptSharp.Evaluation;

/// <summary>One LAMBADA example: a passage split before its last word (<see cref="Target"/> keeps the word's leading space).</summary>
internal sealed record LambadaExample(string Context, string Target);

/// <summary>LAMBADA's metrics over the examples scored, and each example's score.</summary>
internal sealed class LambadaResult(IReadOnlyList<ContinuationScore> examples) : BenchmarkResult
{
    public override string Task => Lambada.TaskName;
    public override int Count => Examples.Count;

    /// <summary>Per example: the target word's summed token loss, its token count, and whether greedy decoding produces it.</summary>
    public IReadOnlyList<ContinuationScore> Examples { get; } = examples;

    /// <summary>The fraction of examples whose last word greedy decoding reproduces, every token of it.</summary>
    public double Accuracy { get; } = examples.Count == 0 ? double.NaN : examples.Count(e => e.IsGreedy) / (double)examples.Count;

    /// <summary>
    /// lm-evaluation-harness's LAMBADA perplexity: exp of the mean, over examples, of the target word's loss (the sum over
    /// its tokens), so it is a perplexity per word.
    /// </summary>
    public double Perplexity { get; } = examples.Count == 0 ? double.NaN : Math.Exp(examples.Average(e => e.Loss));

    /// <summary>The perplexity per target token: exp of the target tokens' total loss over their count.</summary>
    public double TokenPerplexity { get; } = examples.Count == 0 ? double.NaN : Math.Exp(examples.Sum(e => e.Loss) / examples.Sum(e => e.Tokens));

    public override IReadOnlyList<BenchmarkMetric> Metrics => [new("acc", Accuracy), new("perplexity", Perplexity)];
}

/// <summary>
/// LAMBADA (Paperno et al., 2016) in the form GPT-2 was evaluated on (OpenAI's <c>lambada_test.jsonl</c>, lm-evaluation-harness's
/// <c>lambada_openai</c>): one object per line with a <c>text</c>; the target is the last word (after the last space) with its
/// leading space, the context everything before that space. <c>acc</c>: greedy decoding reproduces every token of the target;
/// <c>perplexity</c>: exp of the mean target loss (<see cref="LambadaResult.Perplexity"/>).
/// </summary>
internal sealed class Lambada : BenchmarkTask
{
    public const string TaskName = "lambada";

    private readonly List<int> _lines;
    private readonly List<ContinuationRequest> _requests;

    private Lambada(string path, List<LambadaExample> examples, List<int> lines) : base(path)
    {
        Examples = examples;
        _lines = lines;
        _requests = examples.Select(e => new ContinuationRequest(Encode(e.Context), Encode(e.Target))).ToList();
    }

    public override string Name => TaskName;
    public override int Count => Examples.Count;
    public IReadOnlyList<LambadaExample> Examples { get; }

    /// <summary>The example of a passage: split at its last space (a passage without one has no target).</summary>
    public static LambadaExample Split(string text)
    {
        int space = text.LastIndexOf(' ');
        if (space <= 0 || space == text.Length - 1)
            throw new ArgumentException("the text needs a context, a space and a last word (it has no space inside it, or ends with one).");
        return new LambadaExample(text[..space], text[space..]);
    }

    internal static Lambada Read(string path, int? limit)
    {
        var examples = new List<LambadaExample>();
        var lines = new List<int>();
        foreach (var (line, record) in ReadJsonLines(path, limit))
        {
            string text = StringField(record, "text", path, line);
            try
            {
                examples.Add(Split(text));
            }
            catch (ArgumentException e)
            {
                throw new InvalidDataException($"{path} line {line}: {e.Message}");
            }
            lines.Add(line);
        }
        if (examples.Count == 0) throw new InvalidDataException($"{path}: no examples (expected one JSON object per line with a \"text\").");
        return new Lambada(path, examples, lines);
    }

    public override BenchmarkResult Evaluate(GptModel model, BenchmarkOptions? options = null, Action<BenchmarkProgress>? progress = null)
    {
        var scores = Score(model, options, progress, _requests, Enumerable.Range(0, Count).ToArray(), greedy: true, i => $"{Path} line {_lines[i]}");
        return new LambadaResult(scores);
    }
}
