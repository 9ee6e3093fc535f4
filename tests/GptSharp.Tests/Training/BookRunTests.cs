using GptSharp.Data;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using GptSharp.Training;
using GptSharp.Randomness;

namespace GptSharp.Tests.Training;

/// <summary>
/// The book's chapter-5 run with the torch generator prints the book's own numbers: init, shuffles,
/// dropout, forward, backward and AdamW all have to be right for these lines to come out digit for digit.
/// </summary>
public class BookRunTests
{
    /// <summary>The 18 evaluation lines chapter 5 prints (PyTorch 1.13 on this machine prints the same).</summary>
    public static readonly string[] BookLines =
    [
        "Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933",
        "Ep 1 (Step 000005): Train loss 8.111, Val loss 8.339",
        "Ep 2 (Step 000010): Train loss 6.661, Val loss 7.048",
        "Ep 2 (Step 000015): Train loss 5.961, Val loss 6.616",
        "Ep 3 (Step 000020): Train loss 5.726, Val loss 6.600",
        "Ep 3 (Step 000025): Train loss 5.201, Val loss 6.348",
        "Ep 4 (Step 000030): Train loss 4.417, Val loss 6.278",
        "Ep 4 (Step 000035): Train loss 4.069, Val loss 6.226",
        "Ep 5 (Step 000040): Train loss 3.732, Val loss 6.160",
        "Ep 6 (Step 000045): Train loss 2.850, Val loss 6.179",
        "Ep 6 (Step 000050): Train loss 2.427, Val loss 6.141",
        "Ep 7 (Step 000055): Train loss 2.104, Val loss 6.134",
        "Ep 7 (Step 000060): Train loss 1.882, Val loss 6.233",
        "Ep 8 (Step 000065): Train loss 1.320, Val loss 6.238",
        "Ep 8 (Step 000070): Train loss 0.985, Val loss 6.242",
        "Ep 9 (Step 000075): Train loss 0.717, Val loss 6.293",
        "Ep 9 (Step 000080): Train loss 0.541, Val loss 6.393",
        "Ep 10 (Step 000085): Train loss 0.391, Val loss 6.452",
    ];

    /// <summary>
    /// The book's set-up: <c>torch.manual_seed(123); model = GPTModel(GPT_CONFIG_124M); AdamW(lr=0.0004,
    /// weight_decay=0.1)</c>, the 90/10 Verdict loaders (batch 2, stride 256), <c>train_model_simple</c> with
    /// eval_freq 5, eval_iter 5. Returns the evaluation lines and the epoch samples; after a complete run also
    /// the book's sampling example (<c>torch.manual_seed(123); generate(model, "Every effort moves you",
    /// max_new_tokens=15, context_size=256, top_k=25, temperature=1.4)</c>). Each line is also appended to
    /// <paramref name="log"/> as it comes.
    /// </summary>
    public static (List<string> Lines, List<string> Samples, string? Sampled) RunBook(long maxSteps, TextWriter? log = null)
    {
        var tokenizer = Gpt2Tokenizer.Instance;
        int[] Encode(string text) => tokenizer.Encode(text, Gpt2Tokenizer.AllSpecialTokens);
        var generator = new TorchGenerator(123);
        using var model = new GptModel(GptConfig.Book124M, generator);
        var optimizer = new AdamW(model.Parameters(), lr: 0.0004f, weightDecay: 0.1f);
        var (train, validation) = DataLoaders.SplitAndEncode(TextCorpus.TheVerdict(), Encode);
        int ctx = GptConfig.Book124M.ContextLength;
        var loaders = DataLoaders.CreateTrainValidation(train, validation, batchSize: 2, contextLength: ctx, stride: ctx, generator);
        var trainer = new Trainer(model, optimizer, loaders, new TrainingOptions { MaxSteps = maxSteps }, tokenizer);
        var lines = new List<string>();
        var samples = new List<string>();
        trainer.Evaluated += e => { lines.Add(e.BookLine); log?.WriteLine(e.BookLine); log?.Flush(); };
        trainer.Sampled += s => { samples.Add(s.Text); log?.WriteLine(s.Text); log?.Flush(); };
        trainer.Run();
        // MaxSteps = 90 ends with MaxStepsReached after the last epoch: what counts is that every epoch is done.
        if (trainer.State.Epoch < trainer.Options.Epochs) return (lines, samples, null);

        generator.ManualSeed(123);
        var prompt = TokenBatch.FromSequence(Encode("Every effort moves you"));
        var output = BookGeneration.Generate(model, prompt, maxNewTokens: 15, contextSize: ctx, temperature: 1.4f, topK: 25, generator: generator);
        string sampled = tokenizer.Decode(output.Row(0));
        log?.WriteLine("Output text:\n " + sampled);
        log?.Flush();
        return (lines, samples, sampled);
    }

    [Fact]
    [Trait("Category", "Book124M")] // trains the full-size model: about a minute on 2 cores
    public void FirstStepsPrintTheBooksLines()
    {
        // Steps 0-5 (two evaluations) keep the test within a minute; set GPTSHARP_BOOK_STEPS=90 for the whole run.
        long steps = long.TryParse(Environment.GetEnvironmentVariable("GPTSHARP_BOOK_STEPS"), out long s) ? s : 6;
        string? logPath = Environment.GetEnvironmentVariable("GPTSHARP_BOOK_LOG");
        using var log = logPath is null ? null : new StreamWriter(logPath, append: false);
        var (lines, _, sampled) = RunBook(steps, log);
        Assert.Equal(BookLines.Take(lines.Count), lines);
        Assert.Equal((int)Math.Min(18, (steps + 4) / 5), lines.Count);
        if (sampled is not null)
            Assert.Equal("Every effort moves you stand to work on surprise, a one of us had gone with random-", sampled);
    }
}
