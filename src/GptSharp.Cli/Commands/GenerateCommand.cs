using System.CommandLine;
using System.Diagnostics;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp generate --model M --prompt "Every effort moves you" [--max-new-tokens 25 --temperature 1.4 --top-k 25 ...]</c>:
/// the book's <c>generate</c> (section 5.3) from the command line, the text streamed to stdout as it is produced.
/// </summary>
internal static class GenerateCommand
{
    public const string DefaultPrompt = "Every effort moves you";

    /// <param name="output">Where the text goes (standard output when null); tests pass a writer.</param>
    public static Command Create(TextWriter? output = null, TextWriter? diagnostics = null)
    {
        var settings = new GenerationSettings();
        var prompt = new Option<string>("--prompt", "-p") { Description = "The text to continue.", DefaultValueFactory = _ => DefaultPrompt };
        var command = new Command("generate", "Continue a prompt with a GPT model (greedy, temperature, top-k/top-p/min-p, penalties, beam search).");
        settings.AddTo(command);
        command.Options.Add(prompt);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var options = settings.Read(parse);
            string text = parse.GetValue(prompt) ?? "";
            int maxNewTokens = parse.GetValue(settings.MaxNewTokens);
            CheckPrompt(text, maxNewTokens);
            GenerationSettings.SetThreads(parse.GetValue(settings.Threads));
            var random = settings.CreateRandom(parse);
            using var model = settings.Model.Load(parse);
            using var generator = new TextGenerator(model, options, random);
            Run(generator, text, maxNewTokens, output ?? Console.Out, parse.GetValue(settings.Stats) ? diagnostics ?? Console.Error : null);
            return 0;
        }, diagnostics));
        return command;
    }

    public static void CheckPrompt(string prompt, int maxNewTokens)
    {
        if (string.IsNullOrEmpty(prompt)) throw new ArgumentException("--prompt is empty: give a text to continue.");
        if (maxNewTokens < 0) throw new ArgumentException($"--max-new-tokens must be ≥ 0, got {maxNewTokens}.");
    }

    /// <summary>
    /// Encodes the prompt as the book's <c>text_to_token_ids</c> does (<c>&lt;|endoftext|&gt;</c> allowed), writes it, then
    /// writes each new token's text as soon as it is complete (a character spanning several tokens comes out whole).
    /// </summary>
    /// <param name="echoPrompt">Write the prompt before its continuation (the REPL, where the user just typed it, does not).</param>
    public static void Run(TextGenerator generator, string prompt, int maxNewTokens, TextWriter output, TextWriter? stats, bool echoPrompt = true)
    {
        var tokenizer = Gpt2Tokenizer.Instance;
        int[] ids = tokenizer.Encode(prompt, Gpt2Tokenizer.AllSpecialTokens);
        if (ids.Length == 0) throw new ArgumentException("--prompt is empty: give a text to continue.");
        if (!generator.Options.Slide && ids.Length > generator.ContextSize)
            throw new ArgumentException($"--prompt has {ids.Length} tokens, more than the context length {generator.ContextSize} (--no-slide).");

        if (echoPrompt)
        {
            output.Write(prompt);
            output.Flush();
        }
        var decoder = new StreamingDecoder(tokenizer);
        var clock = Stopwatch.StartNew();
        TimeSpan firstToken = default;
        int count = 0;
        foreach (int token in generator.Stream(ids, maxNewTokens))
        {
            if (count++ == 0) firstToken = clock.Elapsed;
            string piece = decoder.Push(token);
            if (piece.Length > 0)
            {
                output.Write(piece);
                output.Flush();
            }
        }
        output.Write(decoder.Flush());
        output.WriteLine();
        output.Flush();
        clock.Stop();

        if (stats is not null)
        {
            double decodeSeconds = (clock.Elapsed - firstToken).TotalSeconds;
            string rate = count > 1 ? $", {(count - 1) / decodeSeconds:F1} tokens/s after the first" : "";
            stats.WriteLine($"{ids.Length} prompt tokens, {count} new tokens in {clock.Elapsed.TotalSeconds:F2} s (first token {firstToken.TotalMilliseconds:F0} ms{rate}; " +
                $"stopped: {generator.LastStopReason}; {(generator.Options.UseCache ? "KV cache" : "no cache")}, {Workers.Count} threads).");
        }
    }
}
