using System.CommandLine;

namespace GptSharp.Cli.Commands;

/// <summary><c>gptsharp train</c>: the book's chapter-5 pretraining. PLACEHOLDER until the training issue lands.</summary>
internal static class TrainCommand
{
    public static Command Create()
    {
        var command = new Command("train", "Pretrain a GPT model (defaults: the book's chapter 5 run on The Verdict).");
        command.SetAction(_ => CliErrors.Run(() =>
        {
            Console.WriteLine("training is not wired yet");
            return 0;
        }));
        return command;
    }
}
