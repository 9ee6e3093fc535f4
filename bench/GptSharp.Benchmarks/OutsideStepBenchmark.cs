using System.Diagnostics;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using GptSharp.Training;
using GptSharp.Data;

namespace GptSharp.Benchmarks;

/// <summary>
/// Per-token speed of the work a training run does outside its steps, interleaved with the step's own forward pass
/// (124M, batch 2 × 256, drop 0.1): the training forward (dropout, activations kept), the evaluation's batch loss
/// (eval mode, no gradients) and the per-epoch greedy sample (50 tokens after "Every effort moves you") through the KV cache
/// and through the book's uncached loop (checked to give the same text).
/// <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- outside-step-quick [rounds] [threads]</c>
/// </summary>
public static class OutsideStepBenchmark
{
    public static void Quick(int rounds, int threads)
    {
        Workers.Count = threads;
        var (model, optimizer, inputs, targets) = TrainingStepBenchmark.Create(seed: 123);
        using var modelOwner = model;
        using var optimizerOwner = optimizer;
        var tokenizer = Gpt2Tokenizer.Instance;
        int tokens = inputs.Count;
        const int sampleTokens = 50;
        const string prompt = "Every effort moves you";

        double TrainForward()
        {
            var sw = Stopwatch.StartNew();
            model.Train();
            model.Forward(inputs);
            return sw.Elapsed.TotalSeconds;
        }
        double EvalBatch()
        {
            var sw = Stopwatch.StartNew();
            model.Eval();
            using (model.NoGrad()) Pretraining.CalcLossBatch(inputs, targets, model);
            model.Train();
            return sw.Elapsed.TotalSeconds;
        }
        string cachedText = "", bookText = "";
        double Sample()
        {
            var sw = Stopwatch.StartNew();
            cachedText = Pretraining.GenerateSample(model, tokenizer, prompt, sampleTokens);
            return sw.Elapsed.TotalSeconds;
        }
        double BookSample()
        {
            // The book's generate_and_print_sample: generate_text_simple, the whole window per new token (what GenerateSample ran before).
            var sw = Stopwatch.StartNew();
            var ids = BookGeneration.GenerateTextSimple(model, TokenConversions.TextToTokenIds(prompt, tokenizer), sampleTokens, model.Config.ContextLength);
            bookText = TokenConversions.TokenIdsToText(ids, tokenizer).Replace("\n", " ");
            return sw.Elapsed.TotalSeconds;
        }
        TrainForward(); EvalBatch(); Sample(); BookSample(); // warm-up: buffers, JIT

        var train = new List<double>(); var eval = new List<double>(); var sample = new List<double>(); var bookSample = new List<double>();
        for (int r = 0; r < rounds; r++)
        {
            train.Add(TrainForward());
            eval.Add(EvalBatch());
            sample.Add(Sample());
            bookSample.Add(BookSample());
        }
        if (cachedText != bookText) throw new InvalidOperationException($"The KV-cache sample differs from the book's loop:\n{cachedText}\n{bookText}");
        static double Median(List<double> xs) { var s = xs.Order().ToList(); return s[s.Count / 2]; }
        double tf = Median(train), ev = Median(eval), sa = Median(sample), bs = Median(bookSample);
        Console.WriteLine($"threads {threads}, {rounds} interleaved rounds (medians):");
        Console.WriteLine($"  training forward  {tf * 1e3,8:F1} ms / {tokens} tokens = {tokens / tf,7:F0} tokens/s");
        Console.WriteLine($"  evaluation batch  {ev * 1e3,8:F1} ms / {tokens} tokens = {tokens / ev,7:F0} tokens/s ({tf / ev:F2}x the training forward)");
        Console.WriteLine($"  epoch sample      {sa * 1e3,8:F1} ms / {sampleTokens} new tokens = {sampleTokens / sa,7:F1} tokens/s ({sa / tf:F2} training forwards), KV cache");
        Console.WriteLine($"  book's loop       {bs * 1e3,8:F1} ms / {sampleTokens} new tokens = {sampleTokens / bs,7:F1} tokens/s ({bs / tf:F2} training forwards), same text");
    }
}
