using System.CommandLine;
using GptSharp.Generation;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp repl --model M [generation options]</c>: loads the model once, then continues every line read from
/// stdin (typed or piped) until end of input or <c>/exit</c>.
/// </summary>
internal static class ReplCommand
{
    public static Command Create(TextWriter? output = null, TextReader? input = null, TextWriter? diagnostics = null)
    {
        var settings = new GenerationSettings();
        var command = new Command("repl", "Interactive prompt loop: the model stays loaded; each line you type is continued (/exit or end of input quits).");
        settings.AddTo(command);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var options = settings.Read(parse);
            int maxNewTokens = parse.GetValue(settings.MaxNewTokens);
            if (maxNewTokens < 0) throw new ArgumentException($"--max-new-tokens must be ≥ 0, got {maxNewTokens}.");
            GenerationSettings.SetThreads(parse.GetValue(settings.Threads));
            var random = settings.CreateRandom(parse);
            using var model = settings.Model.Load(parse);
            using var generator = new TextGenerator(model, options, random);
            bool interactive = input is null && !Console.IsInputRedirected;
            var errors = diagnostics ?? Console.Error;
            Run(generator, maxNewTokens, input ?? Console.In, output ?? Console.Out, errors, parse.GetValue(settings.Stats), interactive);
            return 0;
        }, diagnostics));
        return command;
    }

    /// <summary>
    /// The loop: one generation per non-empty line. Piped input echoes each prompt before its continuation (so the
    /// output reads like <c>generate</c>'s); typed input does not. A bad line (too long, say) reports its error and the loop goes on.
    /// </summary>
    public static void Run(TextGenerator generator, int maxNewTokens, TextReader input, TextWriter output, TextWriter errors, bool stats, bool interactive)
    {
        if (interactive) output.WriteLine("Type a prompt and press Enter; /exit or Ctrl+D quits.");
        while (true)
        {
            if (interactive) { output.Write("> "); output.Flush(); }
            string? line = input.ReadLine();
            if (line is null || line.Trim() is "/exit" or "/quit") break;
            if (line.Length == 0) continue;
            try
            {
                GenerateCommand.Run(generator, line, maxNewTokens, output, stats ? errors : null, echoPrompt: !interactive);
            }
            catch (ArgumentException e)
            {
                output.Flush();
                errors.WriteLine($"error: {e.Message}");
            }
        }
    }
}
