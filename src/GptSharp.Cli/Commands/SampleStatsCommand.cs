using System.CommandLine;
using GptSharp.Generation;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp sample-stats [--temperatures 1 0.1 5] [--draws 1000] [--seed 123]</c>: exercise 5.1 of the book. For each
/// temperature, how often each token of the toy vocabulary is drawn (the book's <c>print_sampled_tokens</c>), next to
/// the exact probability softmax(logits / T) and the count it predicts.
/// </summary>
internal static class SampleStatsCommand
{
    public static Command Create(TextWriter? output = null)
    {
        var temperatures = new Option<float[]>("--temperatures", "-t")
        {
            Description = "Temperatures to sample at (the book's figure 5.14: 1 0.1 5).",
            DefaultValueFactory = _ => [.. SampleStats.BookTemperatures],
            AllowMultipleArgumentsPerToken = true,
        };
        var draws = new Option<int>("--draws") { Description = "Samples per temperature (the book draws 1,000).", DefaultValueFactory = _ => 1000 };
        var seed = new Option<ulong>("--seed") { Description = "torch.manual_seed before each temperature's draws, as print_sampled_tokens does.", DefaultValueFactory = _ => 123UL };
        var rng = new Option<string>("--rng") { Description = "torch (PyTorch's stream: the book's counts) or fast.", DefaultValueFactory = _ => "torch" };
        var command = new Command("sample-stats", "Exercise 5.1: how often each token of the book's toy vocabulary is sampled at each temperature, with the exact probabilities.");
        command.Options.Add(temperatures);
        command.Options.Add(draws);
        command.Options.Add(seed);
        command.Options.Add(rng);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            Run(parse.GetValue(temperatures) ?? [], parse.GetValue(draws), parse.GetValue(seed), parse.GetValue(rng) ?? "torch", output ?? Console.Out);
            return 0;
        }));
        return command;
    }

    public static void Run(float[] temperatures, int draws, ulong seed, string rng, TextWriter output)
    {
        if (temperatures.Length == 0) throw new ArgumentException("--temperatures needs at least one value.");
        foreach (float t in temperatures)
            if (!(t > 0) || float.IsInfinity(t)) throw new ArgumentException($"--temperatures must be finite and > 0, got {t}.");
        if (draws < 1) throw new ArgumentException($"--draws must be at least 1, got {draws}.");
        var vocabulary = SampleStats.BookVocabulary;
        var logits = SampleStats.BookNextTokenLogits.ToArray();
        for (int i = 0; i < temperatures.Length; i++)
        {
            float temperature = temperatures[i];
            var probabilities = SampleStats.Probabilities(logits, temperature);
            var counts = SampleStats.CountDraws(probabilities, draws, RandomGenerators.Create(rng, seed));
            if (i > 0) output.WriteLine();
            output.WriteLine($"Temperature {temperature:G}: {draws:N0} draws (seed {seed}, {rng})");
            output.WriteLine($"{"sampled",8}   {"token",-8} {"probability",12} {"expected",9}");
            for (int id = 0; id < vocabulary.Count; id++)
                output.WriteLine($"{counts[id],8} x {vocabulary[id],-8} {probabilities[id],12:F6} {probabilities[id] * draws,9:F1}");
        }
        output.Flush();
    }
}
